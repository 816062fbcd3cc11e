package drain

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
)

// drainBench holds the drain benchmark's VMs and cluster.
type drainBench struct {
	c          client.Client
	o          DrainOptions
	bin        string // the ferry binary
	kubeconfig string
	logsDir    string
	say        func(string, ...any)
	fbs        []*bench.FerryVM
	// cordoned are the nodes the benchmark cordoned and has yet to uncordon.
	cordoned []string
}

// checkNodes makes sure the drained and baseline nodes exist and returns the other nodes.
func (d *drainBench) checkNodes(ctx context.Context) ([]string, error) {
	var nodes corev1.NodeList
	if err := d.c.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	var others []string
	have := map[string]bool{}
	for _, n := range nodes.Items {
		have[n.Name] = true
		if n.Name != drainNode {
			others = append(others, n.Name)
		}
		if n.Spec.Unschedulable {
			d.say("Note: node %s is cordoned", n.Name)
		}
	}
	for _, n := range []string{drainNode, baselineNode} {
		if !have[n] {
			return nil, fmt.Errorf("the cluster has no node %s (it has %d nodes; the benchmark needs %s and %s)", n, len(nodes.Items), drainNode, baselineNode)
		}
	}
	return others, nil
}

// setOutbound writes migrationsPerNodeOutbound into the controller's ConfigMap and returns
// what puts the previous state back.
func (d *drainBench) setOutbound(ctx context.Context, n int) (func(context.Context) error, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: configNamespace}}
	if err := d.c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace %s: %w", configNamespace, err)
	}
	key := client.ObjectKey{Namespace: configNamespace, Name: configName}
	cm := &corev1.ConfigMap{}
	existed := true
	if err := d.c.Get(ctx, key, cm); apierrors.IsNotFound(err) {
		existed = false
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: configNamespace, Name: configName}}
	} else if err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", configNamespace, configName, err)
	}
	old, hadOld := cm.Data[configOutbound]
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[configOutbound] = strconv.Itoa(n)
	var err error
	if existed {
		err = d.c.Update(ctx, cm)
	} else {
		err = d.c.Create(ctx, cm)
	}
	if err != nil {
		return nil, fmt.Errorf("setting %s in ConfigMap %s/%s: %w", configOutbound, configNamespace, configName, err)
	}
	d.say("ConfigMap %s/%s: %s=%d", configNamespace, configName, configOutbound, n)
	return func(ctx context.Context) error {
		cm := &corev1.ConfigMap{}
		if err := d.c.Get(ctx, key, cm); err != nil {
			return client.IgnoreNotFound(err)
		}
		if !existed && len(cm.Data) <= 1 {
			return client.IgnoreNotFound(d.c.Delete(ctx, cm))
		}
		if hadOld {
			cm.Data[configOutbound] = old
		} else {
			delete(cm.Data, configOutbound)
		}
		return d.c.Update(ctx, cm)
	}, nil
}

// createOnDrainNode creates the VMs with every other node cordoned and waits until all run
// on the drained node with their guests counting; then it uncordons the other nodes.
func (d *drainBench) createOnDrainNode(ctx context.Context, mem resource.Quantity, others []string) error {
	for _, n := range others {
		nd := &corev1.Node{}
		if err := d.c.Get(ctx, client.ObjectKey{Name: n}, nd); err != nil {
			return err
		}
		if nd.Spec.Unschedulable {
			continue // not ours to uncordon
		}
		if err := bench.SetUnschedulable(ctx, d.c, n, true); err != nil {
			return fmt.Errorf("cordoning %s: %w", n, err)
		}
		d.cordoned = append(d.cordoned, n)
	}
	d.say("Cordoned %s; creating %d VM(s) (%s, 1 core) from %s on %s", strings.Join(others, ", "), len(d.fbs), d.o.Memory, bench.ImageName, drainNode)
	for _, fb := range d.fbs {
		if err := fb.CreateVM(ctx, mem, v1alpha2.AlwaysOnUnlessStoppedManually); err != nil {
			return err
		}
	}
	t := time.Now()
	timeout := 5*time.Minute + time.Duration(len(d.fbs))*time.Minute
	for _, fb := range d.fbs {
		p, err := fb.WaitReady(ctx, timeout-time.Since(t))
		if err != nil {
			return err
		}
		if p.Node != drainNode {
			return fmt.Errorf("VM %s runs on %s, not %s, although the other nodes are cordoned", fb.VM, p.Node, drainNode)
		}
		d.say("VM %s running on %s (pod %s) with a heartbeat after %.1fs", fb.VM, p.Node, p.Pod, time.Since(t).Seconds())
	}
	for len(d.cordoned) > 0 {
		n := d.cordoned[0]
		if err := bench.SetUnschedulable(ctx, d.c, n, false); err != nil {
			return fmt.Errorf("uncordoning %s: %w", n, err)
		}
		d.cordoned = d.cordoned[1:]
	}
	d.say("Uncordoned %s", strings.Join(others, ", "))
	return nil
}

// warnOthersOnNode says which VMs that are not the benchmark's run on the drained node: the
// drain moves them too.
func (d *drainBench) warnOthersOnNode(ctx context.Context) {
	var vms v1alpha2.VirtualMachineList
	if err := d.c.List(ctx, &vms); err != nil {
		return
	}
	mine := map[string]bool{}
	for _, fb := range d.fbs {
		mine[fb.NS+"/"+fb.VM] = true
	}
	var foreign []string
	for _, vm := range vms.Items {
		if vm.Status.NodeName == drainNode && !mine[vm.Namespace+"/"+vm.Name] {
			foreign = append(foreign, vm.Namespace+"/"+vm.Name)
		}
	}
	if len(foreign) > 0 {
		d.say("Note: %s also run(s) on %s; the drain moves them too and its time includes them", strings.Join(foreign, ", "), drainNode)
	}
}

// baseline migrates each VM to baselineNode and back, one migration at a time.
func (d *drainBench) baseline(ctx context.Context, series *bench.Series) error {
	total := 2 * len(d.fbs)
	for _, fb := range d.fbs {
		for _, target := range []string{baselineNode, drainNode} {
			p, err := fb.WaitReady(ctx, 3*time.Minute)
			if err != nil {
				return err
			}
			if p.Node == target {
				// The way there failed; the VM is where the way back would take it.
				continue
			}
			fb.TargetNode = target
			s, _, err := fb.Migrate(ctx)
			fb.TargetNode = ""
			if err != nil {
				return err
			}
			series.Samples = append(series.Samples, s)
			bench.SaySample(d.say, fmt.Sprintf("single %s → %s", fb.VM, target), len(series.Samples)-1, total, s)
		}
		p, err := fb.WaitReady(ctx, 3*time.Minute)
		if err != nil {
			return err
		}
		if p.Node != drainNode {
			return fmt.Errorf("VM %s is on %s after the single migrations, not back on %s", fb.VM, p.Node, drainNode)
		}
	}
	return nil
}

// webhook names Ferry's ValidatingWebhookConfiguration, or "".
func (d *drainBench) webhook(ctx context.Context) string {
	var l admissionv1.ValidatingWebhookConfigurationList
	if err := d.c.List(ctx, &l); err != nil {
		return ""
	}
	var names []string
	for _, w := range l.Items {
		if strings.Contains(w.Name, "ferry") {
			names = append(names, w.Name)
		}
	}
	return strings.Join(names, ",")
}
