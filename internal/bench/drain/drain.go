package drain

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// The nodes of the drain benchmark: its VMs start on drainNode, which is drained; the
// single migrations of the baseline go to baselineNode and back.
const (
	drainNode    = "node-1"
	baselineNode = "node-2"
)

// Keys of the ConfigMap that Ferry's migration controller reads at runtime (see
// internal/controller/migration/config.go).
const (
	configNamespace = "ferry-system"
	configName      = "ferry-config"
	configOutbound  = "migrationsPerNodeOutbound"
)

// postDrainWait bounds how long a VM may take, after the drain, to run off the drained
// node with a heartbeat (long enough for a guest that rebooted to show that it did).
const postDrainWait = 3 * time.Minute

// DrainOptions configure RunDrain.
type DrainOptions struct {
	// FerryBin is the ferry binary that runs the cluster and `ferry k drain`; empty: the
	// ferry next to the running executable, else bin/ferry.
	FerryBin string
	// Kubeconfig points at a running cluster; empty starts `ferry up --nodes Nodes`.
	Kubeconfig string
	// StateDir of the started cluster (empty: a temporary one, removed unless something
	// failed or Keep), or of the cluster that Kubeconfig points at (to find its logs).
	StateDir string
	// Port of the started cluster's apiserver.
	Port int
	// Nodes of the started cluster (at least 2).
	Nodes     int
	Namespace string
	// VMPrefix names the VMs PREFIX-1 … PREFIX-N; their disks are NAME-root.
	VMPrefix string
	// VMs is how many VMs run on the drained node.
	VMs int
	// Memory of each guest, as a Kubernetes quantity.
	Memory string
	// Outbound, when above 0, is written to the ConfigMap key migrationsPerNodeOutbound
	// for the run (restored afterwards).
	Outbound int
	// DrainTimeout bounds `ferry k drain`.
	DrainTimeout time.Duration
	// MigrationTimeout bounds one single migration of the baseline.
	MigrationTimeout time.Duration
	// WaitOther is how long to wait for another `ferry up` on this machine to end.
	WaitOther time.Duration
	// Keep leaves the VMs, their disks and the state directory in place.
	Keep bool
	Out  io.Writer
}

// DefaultDrainOptions are the command's defaults.
func DefaultDrainOptions() DrainOptions {
	return DrainOptions{
		Port:             17443,
		Nodes:            3,
		Namespace:        "default",
		VMPrefix:         "drain-bench",
		VMs:              3,
		Memory:           "128Mi",
		DrainTimeout:     10 * time.Minute,
		MigrationTimeout: 5 * time.Minute,
		Out:              os.Stdout,
	}
}

// RunDrain runs the drain benchmark and prints its table to o.Out. It cleans up (VMs,
// cordons, configuration, cluster) also when ctx is cancelled. Once it has measured, it
// returns what it measured also with an error.
func RunDrain(ctx context.Context, o DrainOptions) (res *DrainResult, retErr error) {
	out, say := bench.Reporter(o.Out)
	if o.VMs < 1 {
		return nil, errors.New("--vms must be at least 1")
	}
	if o.Nodes < 2 {
		return nil, errors.New("--nodes must be at least 2")
	}
	if o.Outbound < 0 {
		return nil, errors.New("--outbound must not be negative")
	}
	mem, err := bench.GuestMemory(o.Memory)
	if err != nil {
		return nil, err
	}
	bin, err := bench.FerryBinary(o.FerryBin)
	if err != nil {
		return nil, err
	}

	// Where the cluster lives.
	failed := false // keeps a temporary state directory
	cl, err := bench.OpenCluster(ctx, bin, o.Kubeconfig, o.StateDir, "fd-", o.Port, o.Nodes, o.WaitOther, say)
	if err != nil {
		return nil, err
	}
	defer func() { cl.Close(failed || o.Keep || retErr != nil, say) }()
	kubeconfig, logsDir := cl.Kubeconfig, cl.LogsDir

	image, c, err := bench.GuestAndClient(ctx, kubeconfig)
	if err != nil {
		return nil, err
	}
	d := &drainBench{c: c, o: o, bin: bin, kubeconfig: kubeconfig, logsDir: logsDir, say: say}
	for i := 1; i <= o.VMs; i++ {
		name := fmt.Sprintf("%s-%d", o.VMPrefix, i)
		d.fbs = append(d.fbs, &bench.FerryVM{C: c, NS: o.Namespace, VM: name, Disk: name + "-root", LogsDir: logsDir,
			Timeout: o.MigrationTimeout, Say: say, ImageURL: "file://" + image})
	}
	// Everything below undoes itself on the way out, in reverse order; with a context
	// that outlives a Ctrl-C.
	cleanupCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	}

	others, err := d.checkNodes(ctx)
	if err != nil {
		return nil, err
	}
	if err := d.fbs[0].EnsureImage(ctx); err != nil {
		return nil, err
	}
	if o.Outbound > 0 {
		restore, err := d.setOutbound(ctx, o.Outbound)
		if err != nil {
			return nil, err
		}
		defer func() {
			cctx, cancel := cleanupCtx()
			defer cancel()
			if err := restore(cctx); err != nil {
				say("Could not restore ConfigMap %s/%s: %v", configNamespace, configName, err)
			}
		}()
	}
	if err := d.deleteVMs(ctx, true); err != nil {
		return nil, err
	}
	defer func() {
		if o.Keep {
			say("Keeping VMs %s-1…%d (--keep)", o.VMPrefix, o.VMs)
			return
		}
		say("Deleting the benchmark VMs…")
		cctx, cancel := cleanupCtx()
		defer cancel()
		if err := d.deleteVMs(cctx, false); err != nil {
			say("Could not delete the benchmark VMs: %v", err)
		}
	}()
	// Whatever is cordoned in the end gets uncordoned (the drained node only when the
	// drain started).
	defer func() {
		cctx, cancel := cleanupCtx()
		defer cancel()
		for _, n := range d.cordoned {
			if err := bench.SetUnschedulable(cctx, c, n, false); err != nil {
				say("Could not uncordon %s: %v", n, err)
			}
		}
	}()

	if err := d.createOnDrainNode(ctx, mem, others); err != nil {
		failed = true
		return nil, err
	}
	d.warnOthersOnNode(ctx)

	res = &DrainResult{Node: drainNode, ClusterNodes: 1 + len(others)}
	if err := d.baseline(ctx, &res.Single); err != nil {
		failed = true
		if ctx.Err() != nil {
			return res, errors.New("interrupted")
		}
		return res, err
	}

	webhook := d.webhook(ctx)
	res.Webhook = webhook
	if webhook == "" {
		say("No ValidatingWebhookConfiguration named *ferry*: kubectl drain will delete the launcher pods; expect the VMs to restart (post-drain failures)")
	} else {
		say("Ferry's eviction webhook: %s", webhook)
	}
	drainOut, drainErr := d.drain(ctx, res)
	if drainErr != nil && ctx.Err() != nil {
		failed = true
		return res, errors.New("interrupted")
	}
	if drainErr == nil {
		if err := d.uncordonDrained(ctx); err != nil {
			say("%v", err)
		}
	}

	outbound := "controller default"
	if o.Outbound > 0 {
		outbound = strconv.Itoa(o.Outbound)
	}
	fmt.Fprintf(out, "\nDrain benchmark: %d VM(s) of %s on %s drained by `kubectl drain` in a cluster of %d nodes, migrationsPerNodeOutbound %s, eviction webhook %s. "+
		"Single = one Migrate operation (%s ⇄ %s) from creation to Completed. Times in ms.\n\n",
		o.VMs, o.Memory, drainNode, 1+len(others), outbound, WebhookName(webhook), drainNode, baselineNode)
	if err := DrainTable(out, *res); err != nil {
		return res, err
	}
	var details []string
	for i, s := range res.Single.Samples {
		if s.Outcome != bench.OK {
			details = append(details, fmt.Sprintf("single migration #%d: %s: %s", i+1, s.Outcome, s.Detail))
		}
	}
	for _, v := range res.VMs {
		if v.Failure != "" {
			details = append(details, fmt.Sprintf("%s: POST-DRAIN FAILURE: %s", v.Name, v.Failure))
		}
	}
	details = append(details, res.Problems...)
	if len(details) > 0 {
		failed = true
		fmt.Fprintf(out, "\nFailures:\n%s\n", strings.Join(details, "\n"))
	}
	if drainErr != nil {
		failed = true
		return res, fmt.Errorf("%w; its output (end):\n%s", drainErr, lastLines(drainOut, 40))
	}
	return res, nil
}

// before is a VM as it ran before the drain.
type before struct {
	node, pod, ip string
	serial        *hypervisor.SerialFollower // the source's serial log
}

// drain runs `ferry k drain` on the drained node, measures it and, when it exited 0, checks
// every VM. It returns the drain's output and an error when it did not exit 0 in time.
func (d *drainBench) drain(ctx context.Context, res *DrainResult) (string, error) {
	// What each VM was, and its source's heartbeat, followed until the checks are done
	// (the source's run directory goes away with its pod).
	fctx, stopFollowing := context.WithCancel(ctx)
	defer stopFollowing()
	prev := make([]before, len(d.fbs))
	for i, fb := range d.fbs {
		p, err := fb.WaitReady(ctx, 3*time.Minute)
		if err != nil {
			return "", err
		}
		vm := &v1alpha2.VirtualMachine{}
		if err := d.c.Get(ctx, client.ObjectKey{Namespace: fb.NS, Name: fb.VM}, vm); err != nil {
			return "", err
		}
		prev[i] = before{node: p.Node, pod: p.Pod, ip: vm.Status.IPAddress,
			serial: hypervisor.FollowSerial(fctx, filepath.Join(p.RunDir, hypervisor.SerialLogName), 100*time.Millisecond)}
		res.VMs = append(res.VMs, DrainVM{Name: fb.VM, From: p.Node, IPBefore: vm.Status.IPAddress})
	}

	// When each VM is first seen Running off the node.
	var mu sync.Mutex
	moved := make([]time.Duration, len(d.fbs))
	t0 := time.Now()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for fctx.Err() == nil {
			for i, fb := range d.fbs {
				vm := &v1alpha2.VirtualMachine{}
				if d.c.Get(fctx, client.ObjectKey{Namespace: fb.NS, Name: fb.VM}, vm) != nil {
					continue
				}
				mu.Lock()
				if moved[i] == 0 && vm.Status.Phase == v1alpha2.MachineRunning && vm.Status.NodeName != "" && vm.Status.NodeName != drainNode {
					moved[i] = time.Since(t0)
				}
				mu.Unlock()
			}
			_ = bench.Sleep(fctx, 250*time.Millisecond)
		}
	}()

	args := []string{"k", "drain", drainNode, "--ignore-daemonsets", "--delete-emptydir-data"}
	d.say("Running `ferry %s` (timeout %s)…", strings.Join(args, " "), d.o.DrainTimeout)
	// From here on the node is cordoned, whatever happens.
	d.cordoned = append(d.cordoned, drainNode)
	output, err := d.runFerry(ctx, d.o.DrainTimeout, "[drain] ", args...)
	elapsed := time.Since(t0)
	if err != nil {
		res.DrainFailed = err.Error()
		stopFollowing()
		<-watchDone
		return output, err
	}
	res.Drain = elapsed
	d.say("Drain finished after %.1fs; checking the VMs", elapsed.Seconds())

	nd := &corev1.Node{}
	if err := d.c.Get(ctx, client.ObjectKey{Name: drainNode}, nd); err != nil {
		res.Problems = append(res.Problems, fmt.Sprintf("node %s after the drain: %v", drainNode, err))
	} else if !nd.Spec.Unschedulable {
		res.Problems = append(res.Problems, fmt.Sprintf("node %s is not cordoned (spec.unschedulable false) after the drain", drainNode))
	}
	for i, fb := range d.fbs {
		v := &res.VMs[i]
		v.To, v.IPAfter, v.Failure = d.check(ctx, fb, prev[i])
		if ctx.Err() != nil {
			break
		}
		if v.Failure == "" {
			d.say("VM %s: %s → %s, address %s, guest counted on", fb.VM, v.From, v.To, v.IPAfter)
		} else {
			d.say("VM %s: POST-DRAIN FAILURE: %s", fb.VM, bench.FirstLine(v.Failure))
		}
	}
	stopFollowing()
	<-watchDone
	for i := range res.VMs {
		res.VMs[i].Moved = moved[i]
	}
	return output, ctx.Err()
}

// check says where a VM runs after the drain, with which address, and why it did not keep
// running and counting ("" when it did).
func (d *drainBench) check(ctx context.Context, fb *bench.FerryVM, was before) (node, ip, failure string) {
	deadline := time.Now().Add(postDrainWait)
	var p bench.Placement
	for {
		var why string
		p, why = fb.Ready(ctx)
		if why == "" && p.Node == was.node {
			why = "still on " + p.Node + " in pod " + p.Pod
		}
		if why == "" {
			break
		}
		if time.Now().After(deadline) || bench.Sleep(ctx, 250*time.Millisecond) != nil {
			return "", "", d.describe(ctx, fb, was, fmt.Sprintf("not running off %s with a heartbeat within %s after the drain: %s", was.node, postDrainWait, why))
		}
	}
	vm := &v1alpha2.VirtualMachine{}
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: fb.NS, Name: fb.VM}, vm); err != nil {
		return p.Node, "", err.Error()
	}
	ip = vm.Status.IPAddress
	var problems []string
	if ip != was.ip {
		problems = append(problems, fmt.Sprintf("address changed from %s to %s", was.ip, bench.OrDash(ip)))
	}
	was.serial.Poll()
	last, _, _ := was.serial.Heartbeat()
	if why := bench.HeartbeatCheck(ctx, filepath.Join(p.RunDir, hypervisor.SerialLogName), last, bench.PostMigrationWindow); why != "" {
		problems = append(problems, why)
	}
	if len(problems) == 0 {
		return p.Node, ip, ""
	}
	return p.Node, ip, d.describe(ctx, fb, was, fmt.Sprintf("now on %s (pod %s): %s", p.Node, p.Pod, strings.Join(problems, "; ")))
}

// describe adds to why the VM's migration state and operations and the log lines naming
// its source pod.
func (d *drainBench) describe(ctx context.Context, fb *bench.FerryVM, was before, why string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var sb strings.Builder
	fmt.Fprintf(&sb, "was on %s (pod %s, %s): %s", was.node, was.pod, was.ip, why)
	vm := &v1alpha2.VirtualMachine{}
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: fb.NS, Name: fb.VM}, vm); err == nil {
		fmt.Fprintf(&sb, "\n    VM phase %s, restartCount %d", vm.Status.Phase, vm.Status.RestartCount)
		if ms := vm.Status.MigrationState; ms != nil {
			fmt.Fprintf(&sb, ", last migration %s → %s: %s", ms.Source.Node, ms.Target.Node, bench.OrDash(string(ms.Result)))
		} else {
			sb.WriteString(", never migrated")
		}
	}
	var ops v1alpha2.VirtualMachineOperationList
	if err := d.c.List(ctx, &ops, client.InNamespace(fb.NS)); err == nil {
		for _, op := range ops.Items {
			if op.Spec.VirtualMachineName == fb.VM && op.Labels[bench.LabelBench] != bench.BenchMarker {
				fmt.Fprintf(&sb, "\n    vmop %s %s: %s %s", op.Name, op.Spec.Type, op.Status.Phase, op.Status.Progress)
			}
		}
	}
	if d.logsDir != "" {
		for _, l := range bench.GrepLogs(d.logsDir, 6, was.pod) {
			if len(l) > 240 {
				l = l[:240] + "…"
			}
			sb.WriteString("\n    " + l)
		}
	}
	return sb.String()
}

// uncordonDrained runs `ferry k uncordon` on the drained node.
func (d *drainBench) uncordonDrained(ctx context.Context) error {
	out, err := d.runFerry(ctx, time.Minute, "", "k", "uncordon", drainNode)
	if err != nil {
		return fmt.Errorf("ferry k uncordon %s: %w: %s", drainNode, err, out)
	}
	d.say("Uncordoned %s", drainNode)
	d.cordoned = slices.DeleteFunc(d.cordoned, func(n string) bool { return n == drainNode })
	return nil
}

// runFerry runs the ferry binary against the benchmark's cluster and returns its output;
// with a prefix, it also says each line as it comes.
func (d *drainBench) runFerry(ctx context.Context, timeout time.Duration, prefix string, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, d.bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+d.kubeconfig)
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var buf strings.Builder
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		s := bufio.NewScanner(pr)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			buf.WriteString(s.Text() + "\n")
			if prefix != "" {
				d.say("%s%s", prefix, s.Text())
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-scanned
	if err != nil {
		if errors.Is(cctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("`ferry %s` did not finish within %s", strings.Join(args, " "), timeout)
		} else {
			err = fmt.Errorf("`ferry %s`: %w", strings.Join(args, " "), err)
		}
	}
	return buf.String(), err
}

// deleteVMs deletes the benchmark's VMs, their disks and the operations that name them, and
// waits until they are gone. With leftovers, also VMs of an earlier run with more VMs
// (PREFIX-N, labelled by the benchmark).
func (d *drainBench) deleteVMs(ctx context.Context, leftovers bool) error {
	ns := d.o.Namespace
	names := map[string]bool{}
	for _, fb := range d.fbs {
		names[fb.VM] = true
	}
	if leftovers {
		var vms v1alpha2.VirtualMachineList
		if err := d.c.List(ctx, &vms, client.InNamespace(ns), client.MatchingLabels{bench.LabelBench: bench.BenchMarker}); err != nil {
			return fmt.Errorf("listing VMs: %w", err)
		}
		for _, vm := range vms.Items {
			if rest, ok := strings.CutPrefix(vm.Name, d.o.VMPrefix+"-"); ok {
				if _, err := strconv.Atoi(rest); err == nil {
					names[vm.Name] = true
				}
			}
		}
	}
	var ops v1alpha2.VirtualMachineOperationList
	if err := d.c.List(ctx, &ops, client.InNamespace(ns)); err == nil {
		for i := range ops.Items {
			if names[ops.Items[i].Spec.VirtualMachineName] {
				_ = client.IgnoreNotFound(d.c.Delete(ctx, &ops.Items[i]))
			}
		}
	}
	var objs []client.Object
	for name := range names {
		objs = append(objs,
			&v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}},
			&v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: name + "-root", Namespace: ns}})
	}
	for _, o := range objs {
		if err := d.c.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting %s: %w", o.GetName(), err)
		}
	}
	deadline := time.Now().Add(2*time.Minute + 10*time.Second*time.Duration(len(names)))
	for _, o := range objs {
		for {
			err := d.c.Get(ctx, client.ObjectKeyFromObject(o), o)
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s still there after its deletion", o.GetName())
			}
			if err := bench.Sleep(ctx, 250*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

func WebhookName(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
