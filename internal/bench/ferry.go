package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/ferryvm/ferry/internal/pinger"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Names of what the benchmark creates in the cluster.
const (
	imageName   = "ferry-guest"
	labelBench  = "app.kubernetes.io/managed-by"
	benchMarker = "ferry-bench"
)

// postMigrationWindow is how long a guest may take to count on after a migration.
const postMigrationWindow = 10 * time.Second

func newClient(kubeconfig string) (client.WithWatch, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha2.AddToScheme(s); err != nil {
		return nil, err
	}
	return client.NewWithWatch(cfg, client.Options{Scheme: s})
}

// ferryBench drives Evict operations of one benchmark VM.
type ferryBench struct {
	c        client.Client
	ns, vm   string
	disk     string
	logsDir  string // the cluster's logs, when known
	timeout  time.Duration
	say      func(string, ...any)
	imageURL string
	// params is the migration request Ferry's controller sent to a source node.
	params *v1alpha2.MigrationRequest
	// targetNode, when set, makes migrate create Migrate operations to that node
	// (spec.migrate.nodeSelector kubernetes.io/hostname) instead of Evict operations.
	targetNode string
	// noPing: no pinger (Options.NoPing).
	noPing bool
}

// newOperation is the operation migrate creates: Evict, or Migrate to b.targetNode.
func (b *ferryBench) newOperation() *v1alpha2.VirtualMachineOperation {
	op := &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{GenerateName: b.vm + "-evict-", Namespace: b.ns, Labels: b.labels()},
		Spec:       v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: b.vm},
	}
	if b.targetNode != "" {
		op.GenerateName = b.vm + "-migrate-"
		op.Spec.Type = v1alpha2.OpMigrate
		op.Spec.Migrate = &v1alpha2.MigrateSpec{NodeSelector: map[string]string{corev1.LabelHostname: b.targetNode}}
	}
	return op
}

func (b *ferryBench) labels() map[string]string { return map[string]string{labelBench: benchMarker} }

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ensureImage creates the ClusterVirtualImage ferry-guest from imageURL unless it exists,
// and waits until it is Ready.
func (b *ferryBench) ensureImage(ctx context.Context) error {
	img := &v1alpha2.ClusterVirtualImage{}
	err := b.c.Get(ctx, client.ObjectKey{Name: imageName}, img)
	if apierrors.IsNotFound(err) {
		b.say("Creating ClusterVirtualImage %s from %s", imageName, b.imageURL)
		img = &v1alpha2.ClusterVirtualImage{
			ObjectMeta: metav1.ObjectMeta{Name: imageName, Labels: b.labels()},
			Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{
				Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: b.imageURL},
			}},
		}
		err = b.c.Create(ctx, img)
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("ClusterVirtualImage %s: %w", imageName, err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if err := b.c.Get(ctx, client.ObjectKey{Name: imageName}, img); err == nil {
			switch img.Status.Phase {
			case v1alpha2.ImageReady:
				return nil
			case v1alpha2.ImageFailed:
				return fmt.Errorf("ClusterVirtualImage %s failed: %+v", imageName, img.Status.Conditions)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ClusterVirtualImage %s not Ready within 3m (phase %q)", imageName, img.Status.Phase)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// createVM makes the benchmark VM (1 core, the given runPolicy) and its disk, after
// removing leftovers of an earlier run.
func (b *ferryBench) createVM(ctx context.Context, memory resource.Quantity, policy v1alpha2.RunPolicy) error {
	if err := b.deleteVM(ctx); err != nil {
		return err
	}
	disk := &v1alpha2.VirtualDisk{
		ObjectMeta: metav1.ObjectMeta{Name: b.disk, Namespace: b.ns, Labels: b.labels()},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
			ObjectRef: &v1alpha2.ObjectRefSource{Kind: "ClusterVirtualImage", Name: imageName}}},
	}
	vm := &v1alpha2.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: b.vm, Namespace: b.ns, Labels: b.labels()},
		Spec: v1alpha2.VirtualMachineSpec{
			RunPolicy:           policy,
			LiveMigrationPolicy: v1alpha2.PreferSafe,
			CPU:                 v1alpha2.CPUSpec{Cores: 1},
			Memory:              v1alpha2.MemorySpec{Size: memory},
			BlockDeviceRefs:     []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: b.disk}},
		},
	}
	if err := b.c.Create(ctx, disk); err != nil {
		return fmt.Errorf("creating VirtualDisk %s: %w", b.disk, err)
	}
	if err := b.c.Create(ctx, vm); err != nil {
		return fmt.Errorf("creating VirtualMachine %s: %w", b.vm, err)
	}
	return nil
}

// deleteVM deletes the benchmark's operations, VM and disk and waits until they are gone.
func (b *ferryBench) deleteVM(ctx context.Context) error {
	var ops v1alpha2.VirtualMachineOperationList
	if err := b.c.List(ctx, &ops, client.InNamespace(b.ns), client.MatchingLabels(b.labels())); err == nil {
		for i := range ops.Items {
			_ = client.IgnoreNotFound(b.c.Delete(ctx, &ops.Items[i]))
		}
	}
	objs := []client.Object{
		&v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: b.vm, Namespace: b.ns}},
		&v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: b.disk, Namespace: b.ns}},
	}
	for _, o := range objs {
		if err := b.c.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting %s: %w", o.GetName(), err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, o := range objs {
		for {
			err := b.c.Get(ctx, client.ObjectKeyFromObject(o), o)
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s %s still there 2m after its deletion", o.GetObjectKind().GroupVersionKind().Kind, o.GetName())
			}
			if err := sleep(ctx, 250*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// placement is where the VM runs.
type placement struct {
	pod, node, runDir string
}

// waitReady waits until the VM is Running with an active launcher pod whose guest counts.
func (b *ferryBench) waitReady(ctx context.Context, timeout time.Duration) (placement, error) {
	deadline := time.Now().Add(timeout)
	last := "nothing yet"
	for {
		if p, why := b.ready(ctx); why == "" {
			return p, nil
		} else {
			last = why
		}
		if time.Now().After(deadline) {
			return placement{}, fmt.Errorf("VM %s not running with a heartbeat within %s: %s", b.vm, timeout, last)
		}
		// No node has room (e.g. more VMs than one node's CPUs): waiting does not help.
		if strings.Contains(last, v1alpha2.ReasonUnschedulable) && time.Until(deadline) < timeout-30*time.Second {
			return placement{}, fmt.Errorf("VM %s cannot be scheduled: %s", b.vm, last)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return placement{}, err
		}
	}
}

func (b *ferryBench) ready(ctx context.Context) (placement, string) {
	vm := &v1alpha2.VirtualMachine{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: b.vm}, vm); err != nil {
		return placement{}, err.Error()
	}
	if vm.Status.Phase != v1alpha2.MachineRunning {
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionRunning)
		if c != nil {
			return placement{}, fmt.Sprintf("phase %q (Running: %s %s)", vm.Status.Phase, c.Reason, c.Message)
		}
		return placement{}, fmt.Sprintf("phase %q", vm.Status.Phase)
	}
	var p placement
	for _, vp := range vm.Status.VirtualMachinePods {
		if vp.Active {
			p.pod = vp.Name
		}
	}
	if p.pod == "" {
		return placement{}, "no active launcher pod"
	}
	pod := &corev1.Pod{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: p.pod}, pod); err != nil {
		return placement{}, err.Error()
	}
	p.node, p.runDir = pod.Spec.NodeName, pod.Annotations[v1alpha2.AnnotationRunDir]
	if p.runDir == "" {
		return placement{}, "pod " + p.pod + " has no run-dir annotation"
	}
	f := hypervisor.NewSerialFollower(filepath.Join(p.runDir, hypervisor.SerialLogName))
	f.Poll()
	if _, _, ok := f.Heartbeat(); !ok {
		return placement{}, "no heartbeat in " + p.runDir
	}
	return p, ""
}

// migrate evicts the VM once (or migrates it to targetNode) and measures it. The error is
// for what stops the benchmark (interrupt, a VM that does not come back); a failed
// migration is a Sample.
func (b *ferryBench) migrate(ctx context.Context) (Sample, placement, error) {
	src, err := b.waitReady(ctx, 3*time.Minute)
	if err != nil {
		return Sample{}, placement{}, err
	}
	srcF := hypervisor.NewSerialFollower(filepath.Join(src.runDir, hypervisor.SerialLogName))
	srcF.Poll()
	pg := b.startPinger(ctx, src)
	if pg != nil {
		defer pg.Stop()
	}
	op := b.newOperation()
	tw := watchMigration(ctx, b.c, b.ns, b.vm, src.pod)
	defer tw.finish(0)
	t0 := time.Now()
	if err := b.c.Create(ctx, op); err != nil {
		return Sample{}, src, fmt.Errorf("creating the %s operation: %w", op.Spec.Type, err)
	}
	tw.created(op.Name, t0)
	key := client.ObjectKeyFromObject(op)
	var e2e time.Duration
	for done := false; !done; {
		if err := b.c.Get(ctx, key, op); err != nil && ctx.Err() == nil {
			if apierrors.IsNotFound(err) {
				return Sample{Outcome: MigrationFailed, Detail: fmt.Sprintf("vmop %s disappeared", key.Name)}, src, nil
			}
		}
		srcF.Poll()
		if b.params == nil && op.Status.Migration != nil && op.Status.Migration.SourcePod != "" {
			b.captureParams(ctx, op.Status.Migration.SourcePod)
		}
		switch op.Status.Phase {
		case v1alpha2.OpCompleted:
			e2e = time.Since(t0)
			done = true
			continue
		case v1alpha2.OpFailed:
			return Sample{Outcome: MigrationFailed, Detail: b.describeFailure(op, "")}, src, nil
		}
		if time.Since(t0) > b.timeout {
			detail := b.describeFailure(op, fmt.Sprintf("not finished after %s", b.timeout))
			_ = b.c.Delete(context.WithoutCancel(ctx), op) // aborts it
			return Sample{Outcome: MigrationFailed, Detail: detail}, src, nil
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return Sample{}, src, err
		}
	}
	ms := op.Status.Migration
	// The source pod goes a moment after the operation completes.
	s := Sample{E2E: e2e, Outcome: OK, Timeline: tw.finish(5 * time.Second)}
	if ms == nil {
		s.Outcome, s.Detail = PostFailure, fmt.Sprintf("vmop %s Completed without status.migration", op.Name)
		return s, src, nil
	}
	s.Transfer = time.Duration(ms.TransferMs) * time.Millisecond
	s.Downtime = time.Duration(ms.DowntimeMs) * time.Millisecond
	if pg != nil {
		var why string
		if s.Net, why = measureNet(ctx, pg, t0); why != "" {
			s.Outcome, s.Detail = PostFailure, fmt.Sprintf("vmop %s (%s → %s) Completed, then: %s", op.Name, ms.SourceNode, ms.TargetNode, why)
		}
	}
	srcF.Poll()
	last, _, _ := srcF.Heartbeat()

	target := &corev1.Pod{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: ms.TargetPod}, target); err != nil {
		s.Outcome, s.Detail = PostFailure, fmt.Sprintf("vmop %s Completed but target pod %s: %v", op.Name, ms.TargetPod, err)
		return s, src, nil
	}
	dir := target.Annotations[v1alpha2.AnnotationRunDir]
	if dir == "" {
		s.Outcome, s.Detail = PostFailure, fmt.Sprintf("vmop %s Completed but target pod %s has no run dir", op.Name, ms.TargetPod)
		return s, src, nil
	}
	if why := heartbeatCheck(ctx, filepath.Join(dir, hypervisor.SerialLogName), last, postMigrationWindow); why != "" {
		s.Outcome = PostFailure
		s.Detail = fmt.Sprintf("vmop %s (%s → %s, pod %s → %s) Completed in %s, then: %s", op.Name, ms.SourceNode, ms.TargetNode,
			ms.SourcePod, ms.TargetPod, e2e.Round(time.Millisecond), why)
		if lines := b.logLines(op.Name, ms.TargetPod); len(lines) > 0 {
			s.Detail += "\n    " + strings.Join(lines, "\n    ")
		}
	}
	return s, placement{pod: ms.TargetPod, node: ms.TargetNode, runDir: dir}, nil
}

// captureParams reads the migration request the controller put on the source pod.
func (b *ferryBench) captureParams(ctx context.Context, sourcePod string) {
	pod := &corev1.Pod{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: sourcePod}, pod); err != nil {
		return
	}
	raw := pod.Annotations[v1alpha2.AnnotationMigrateTo]
	if raw == "" {
		return
	}
	var req v1alpha2.MigrationRequest
	if json.Unmarshal([]byte(raw), &req) == nil {
		b.params = &req
	}
}

// describeFailure sums up a failed or stuck operation with the log lines that name it.
func (b *ferryBench) describeFailure(op *v1alpha2.VirtualMachineOperation, why string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "vmop %s phase %s", op.Name, op.Status.Phase)
	if why != "" {
		fmt.Fprintf(&sb, " (%s)", why)
	}
	if c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil {
		fmt.Fprintf(&sb, ", condition Completed=%s reason %s: %s", c.Status, c.Reason, c.Message)
	}
	target := ""
	if ms := op.Status.Migration; ms != nil {
		b, _ := json.Marshal(ms)
		fmt.Fprintf(&sb, "\n    status.migration: %s", b)
		target = ms.TargetPod
	}
	if lines := b.logLines(op.Name, target); len(lines) > 0 {
		sb.WriteString("\n    " + strings.Join(lines, "\n    "))
	}
	return sb.String()
}

func (b *ferryBench) logLines(words ...string) []string {
	if b.logsDir == "" {
		return nil
	}
	return grepLogs(b.logsDir, 30, words...)
}

// startPinger pings the VM's address every 10 ms from the host, when the VM has a NIC
// (its launcher pod routes an address) and the benchmark may open a raw socket (root);
// nil otherwise.
func (b *ferryBench) startPinger(ctx context.Context, src placement) *pinger.Pinger {
	if os.Geteuid() != 0 || b.noPing {
		return nil
	}
	pod := &corev1.Pod{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: src.pod}, pod); err != nil || len(pod.Spec.Containers) == 0 ||
		!slices.Contains(pod.Spec.Containers[0].Args, "--ip") {
		return nil
	}
	vm := &v1alpha2.VirtualMachine{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: b.ns, Name: b.vm}, vm); err != nil {
		return nil
	}
	addr, err := netip.ParseAddr(vm.Status.IPAddress)
	if err != nil {
		return nil
	}
	p, err := pinger.Start(ctx, pinger.Options{Target: addr})
	if err != nil {
		b.say("Not measuring the network: %v", err)
		return nil
	}
	// A guest just booted may not have its address yet: measure from steady answers on.
	since := time.Now()
	for answeredTail(p.Snapshot()) < 20 {
		if time.Since(since) > 30*time.Second {
			b.say("Not measuring the network of this migration: %s does not answer steadily (%s)", addr, p.Snapshot())
			p.Stop()
			return nil
		}
		if sleep(ctx, 50*time.Millisecond) != nil {
			p.Stop()
			return nil
		}
	}
	return p
}

// netSettle is how long after a completed migration the address must answer again.
const netSettle = 5 * time.Second

// measureNet waits until the address answers steadily again (20 replies in a row to probes
// sent after now) and reads what the pinger saw since t0. why says what went wrong.
func measureNet(ctx context.Context, pg *pinger.Pinger, t0 time.Time) (*NetSample, string) {
	done := time.Now()
	for {
		r := pg.Snapshot().Between(done, time.Now())
		if tail := answeredTail(r); tail >= 20 {
			break
		}
		if time.Since(done) > netSettle {
			return nil, fmt.Sprintf("the VM's address did not answer steadily within %s: %s", netSettle, r)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, err.Error()
		}
	}
	r := pg.Stop().Between(t0, time.Now())
	return &NetSample{Sent: r.Sent, Lost: r.Lost, Outage: r.Downtime(), Silence: r.LongestSilence()}, ""
}

// answeredTail counts the answered probes at the end of r.
func answeredTail(r pinger.Result) int {
	n := 0
	for i := len(r.Probes) - 1; i >= 0 && r.Probes[i].Answered; i-- {
		n++
	}
	return n
}
