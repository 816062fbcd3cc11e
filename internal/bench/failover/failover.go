package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
)

// failoverNodes is the size of the cluster the failover benchmark starts: one failed node
// of three stays under the storm guard (more than 49% unreachable stops all fencing).
const failoverNodes = 3

// FailoverOptions configure RunFailover.
type FailoverOptions struct {
	// FerryBin is the ferry binary that runs the cluster and injects the faults; empty: the
	// ferry next to the running executable, else bin/ferry.
	FerryBin string
	// Kubeconfig points at a running `ferry up`; empty starts one with Profile.
	Kubeconfig string
	// StateDir of the started cluster (empty: a temporary one, removed unless something
	// failed or Keep), or of the cluster that Kubeconfig points at (faults need it).
	StateDir string
	Port     int
	// Profile is the fencing profile of the cluster it starts.
	Profile string
	// Faults are `ferry node` verbs: poweroff, disconnect, freeze.
	Faults []string
	// Runs per fault.
	Runs      int
	Namespace string
	VMName    string
	Memory    string
	// RunTimeout bounds one failover, from the fault to the new instance's first heartbeat.
	RunTimeout time.Duration
	// WaitOther is how long to wait for another `ferry up` on this machine to end.
	WaitOther time.Duration
	// Keep leaves the VM, its disk and the state directory in place.
	Keep bool
	Out  io.Writer
}

// DefaultFailoverOptions are the command's defaults.
func DefaultFailoverOptions() FailoverOptions {
	return FailoverOptions{
		Port:       17443,
		Profile:    string(deckhousev1.ProfileFast),
		Faults:     []string{"poweroff", "disconnect", "freeze"},
		Runs:       1,
		Namespace:  "default",
		VMName:     "failover-bench",
		Memory:     "128Mi",
		RunTimeout: 5 * time.Minute,
		Out:        os.Stdout,
	}
}

// RunFailover fails the node of the benchmark VM with each fault, Runs times, measures
// how the VM comes back on another node, and prints the table to o.Out. It restores the
// failed node and cleans up (VM, cluster) also when ctx is cancelled. Once it has measured,
// it returns what it measured also with an error.
func RunFailover(ctx context.Context, o FailoverOptions) (_ *FailoverReport, retErr error) {
	out, say := bench.Reporter(o.Out)
	if o.Runs < 1 {
		return nil, errors.New("--runs must be at least 1")
	}
	if o.Kubeconfig == "" && !slices.Contains(fencingProfiles, o.Profile) {
		return nil, fmt.Errorf("unknown profile %q (%s)", o.Profile, strings.Join(fencingProfiles, ", "))
	}
	var faults []string
	for _, f := range o.Faults {
		f = strings.TrimSpace(f)
		if _, ok := faultRestore[f]; !ok {
			return nil, fmt.Errorf("unknown fault %q (poweroff, disconnect, freeze)", f)
		}
		faults = append(faults, f)
	}
	if len(faults) == 0 {
		return nil, errors.New("no fault to inject")
	}
	mem, err := bench.GuestMemory(o.Memory)
	if err != nil {
		return nil, err
	}
	bin, err := bench.FerryBinary(o.FerryBin)
	if err != nil {
		return nil, err
	}

	failed := false // keeps a temporary state directory
	var upArgs []string
	if o.Kubeconfig == "" {
		upArgs = []string{"--fencing-profile", o.Profile}
	}
	cl, err := bench.OpenCluster(ctx, bin, o.Kubeconfig, o.StateDir, "ff-", o.Port, failoverNodes, o.WaitOther, say, upArgs...)
	if err != nil {
		return nil, err
	}
	defer func() { cl.Close(failed || o.Keep || retErr != nil, say) }()
	stateDir, err := filepath.Abs(cl.StateDir)
	if err != nil {
		return nil, err
	}
	image, c, err := bench.GuestAndClient(ctx, cl.Kubeconfig)
	if err != nil {
		return nil, err
	}

	rep := FailoverReport{}
	if rep.Profile, err = fencingProfile(ctx, c); err != nil {
		return nil, err
	}
	if rep.Profile == "off" {
		return nil, fmt.Errorf("the NodeGroup %s has no fencing: nothing would restart the VM elsewhere", workerGroup)
	}
	if o.Kubeconfig != "" && rep.Profile != o.Profile {
		say("Note: the cluster's fencing profile is %s, not --profile %s (a running cluster keeps its own)", rep.Profile, o.Profile)
	}
	say("Waiting for %d nodes Ready with armed watchdogs…", failoverNodes)
	if rep.Timing, err = waitNodesArmed(ctx, c, failoverNodes, 2*time.Minute); err != nil {
		return nil, err
	}
	say("Fencing profile %s: %s", rep.Profile, rep.Timing)

	fb := &bench.FerryVM{C: c, NS: o.Namespace, VM: o.VMName, Disk: o.VMName + "-root", LogsDir: cl.LogsDir,
		Say: say, ImageURL: "file://" + image}
	if err := fb.EnsureImage(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if o.Keep {
			say("Keeping VM %s (--keep)", o.VMName)
			return
		}
		say("Deleting VM %s…", o.VMName)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := fb.DeleteVM(cctx); err != nil {
			say("Could not delete the benchmark VM: %v", err)
		}
	}()
	say("Creating VM %s/%s (%s, 1 core, runPolicy AlwaysOn) from %s", o.Namespace, o.VMName, o.Memory, bench.ImageName)
	if err := fb.CreateVM(ctx, mem, v1alpha2.AlwaysOn); err != nil {
		return nil, err
	}
	t := time.Now()
	p, err := fb.WaitReady(ctx, 5*time.Minute)
	if err != nil {
		failed = true
		return nil, err
	}
	say("VM running on %s (pod %s) with a heartbeat after %.1fs", p.Node, p.Pod, time.Since(t).Seconds())

	fm := &failoverBench{c: c, fb: fb, bin: bin, stateDir: stateDir, runTimeout: o.RunTimeout, say: say}
	var runErr error
runs:
	for _, fault := range faults {
		for i := range o.Runs {
			run, err := fm.once(ctx, fault, i+1, o.Runs)
			rep.Runs = append(rep.Runs, run)
			if err != nil {
				runErr = err
				break runs
			}
		}
	}

	fmt.Fprintf(out, "\nFailover benchmark: VM %s (%s, 1 core, runPolicy AlwaysOn) on %d nodes, fencing profile %s; each fault hits the VM's node at T0. "+
		"Phases run from the previous step (ms): detection (T0 → VM NodeReachable=False FencingPending), fencing wait (→ Node gone), "+
		"new pod (→ a new launcher pod seen), scheduled (→ it has a node), pod running (→ it is Running), boot (→ first CNT of the new instance); "+
		"total = T0 → that CNT. VM RUNNING: T0 → the VM's phase Running on the new node (before or after the CNT; - when not seen). "+
		"OLD LAST CNT: T0 → the failed instance's last heartbeat; GUEST GAP: its last CNT → the new one's first.\n\n",
		o.VMName, o.Memory, failoverNodes, rep.Profile)
	if err := FailoverTable(out, rep); err != nil {
		return &rep, err
	}
	var details []string
	for _, run := range rep.Runs {
		if run.Failure != "" {
			details = append(details, fmt.Sprintf("%s #%d: %s", run.Fault, run.Run, run.Failure))
		}
		for _, ov := range run.Overlaps {
			details = append(details, fmt.Sprintf("%s #%d: DOUBLE RUN: heartbeats of %s", run.Fault, run.Run, ov))
		}
		if run.Double > 0 {
			details = append(details, fmt.Sprintf("%s #%d: DOUBLE RUN: %d of %d samples found more than one QEMU of the VM", run.Fault, run.Run, run.Double, run.Samples))
		}
	}
	if len(details) > 0 {
		failed = true
		fmt.Fprintf(out, "\nFailures:\n%s\n", strings.Join(details, "\n"))
	}
	if runErr != nil {
		failed = true
		if ctx.Err() != nil {
			return &rep, errors.New("interrupted; the table shows what was measured")
		}
		return &rep, fmt.Errorf("benchmark stopped early: %w", runErr)
	}
	return &rep, nil
}

// failoverBench fails the benchmark VM's node and watches the VM come back.
type failoverBench struct {
	c          client.Client
	fb         *bench.FerryVM
	bin        string
	stateDir   string
	runTimeout time.Duration
	say        func(string, ...any)
}

// once injects fault into the VM's node, measures the failover, restores the node and waits
// until it is back and the VM runs. The error is for what stops the benchmark (interrupt,
// a fault that could not be injected, a node that does not come back); a failover that
// does not complete is a run with a Failure.
func (f *failoverBench) once(ctx context.Context, fault string, n, of int) (FailoverRun, error) {
	tag := fmt.Sprintf("[%s %d/%d]", fault, n, of)
	run := FailoverRun{Fault: fault, Run: n}
	p, err := f.fb.WaitReady(ctx, 3*time.Minute)
	if err != nil {
		return run, err
	}
	run.From = p.Node
	node := &corev1.Node{}
	if err := f.c.Get(ctx, client.ObjectKey{Name: p.Node}, node); err != nil {
		return run, err
	}
	oldUID := node.UID

	// Watch the QEMU processes and serial logs from before the fault until the node is back.
	insts := bench.NewInstanceWatch(f.stateDir, f.fb.NS, f.fb.VM)
	insts.Poll(time.Now()) // the baseline
	procs := &bench.ProcessWatch{}
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(bench.WatchInterval)
		defer t.Stop()
		for {
			insts.Poll(time.Now())
			procs.Sample(f.fb.NS, f.fb.VM)
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
		}
	})
	defer func() { stopWatch(); wg.Wait() }()
	// A heartbeat seen while watching dates the failed instance's last one, even when the
	// fault ends it before it prints another.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if s, ok := insts.Span(p.RunDir); ok && !s.First.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			f.say("%s Note: no heartbeat in %s for 10s before the fault", tag, p.RunDir)
			break
		}
		if err := bench.Sleep(ctx, bench.WatchInterval); err != nil {
			return run, err
		}
	}

	// From here on the node is restored, whatever happens.
	restored := false
	restore := func(ctx context.Context) error {
		restored = true
		return bench.FerryNode(ctx, f.bin, f.stateDir, faultRestore[fault], p.Node)
	}
	defer func() {
		if !restored {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := restore(cctx); err != nil {
				f.say("%s could not restore %s: %v", tag, p.Node, err)
			}
		}
	}()
	f.say("%s %s of %s, which runs the VM (pod %s)", tag, fault, p.Node, p.Pod)
	if err := bench.FerryNode(ctx, f.bin, f.stateDir, fault, p.Node); err != nil {
		return run, err
	}
	t0 := time.Now()

	if err := f.follow(ctx, tag, t0, p, oldUID, insts, &run); err != nil {
		return run, err
	}

	if err := restore(ctx); err != nil {
		if fault != "freeze" {
			return run, err
		}
		// The watchdog's reset killed the frozen agent; the one ferry up started since
		// runs, or is between restarts.
		f.say("%s %v (its watchdog reset the node already)", tag, err)
	}
	f.say("%s %s %s; waiting for it to be back", tag, faultRestore[fault], p.Node)
	t := time.Now()
	gone := oldUID
	if run.Marks.Fenced == 0 {
		gone = "" // not fenced: the same Node comes back
	}
	if err := waitNodeBack(ctx, f.c, p.Node, gone, true, 3*time.Minute); err != nil {
		return run, err
	}
	if _, err := f.fb.WaitReady(ctx, 3*time.Minute); err != nil {
		return run, err
	}
	f.say("%s %s back (new Node, Ready, watchdog armed) %.1fs after the %s; VM running", tag, p.Node, time.Since(t).Seconds(), faultRestore[fault])
	stopWatch()
	wg.Wait()
	run.Samples, run.Double, _ = procs.Counts()
	run.Overlaps = bench.Overlaps(insts.Spans())
	if span, ok := insts.Span(p.RunDir); ok && !span.Last.IsZero() {
		run.OldLast, run.OldLastOK = span.Last.Sub(t0), true
	}
	f.say("%s %s", tag, runSummary(run))
	return run, nil
}

// vmRunningAfterBoot bounds how long follow keeps polling for the VM's phase Running once
// the new instance's first heartbeat came first.
const vmRunningAfterBoot = 10 * time.Second

// follow polls the VM, the failed Node and the launcher pods every bench.WatchInterval and
// records the marks, until the new instance's first heartbeat and the VM's phase Running on
// the new node (at most vmRunningAfterBoot after that heartbeat was seen), or the run's
// timeout. Only a heartbeat not seen by the timeout fails the run.
func (f *failoverBench) follow(ctx context.Context, tag string, t0 time.Time, was bench.Placement, oldUID types.UID, insts *bench.InstanceWatch, run *FailoverRun) error {
	m := &run.Marks
	deadline := t0.Add(f.runTimeout)
	var newDir, newPod, newNode string
	// leftOld: the VM seen other than Running on the failed node since T0, so that its
	// phase Running on a node of that name is the new instance's, not the old one's.
	leftOld := false
	otherReasons := map[string]bool{}
	for {
		since := time.Since(t0)
		vm := &v1alpha2.VirtualMachine{}
		vmErr := f.c.Get(ctx, client.ObjectKey{Namespace: f.fb.NS, Name: f.fb.VM}, vm)
		if vmErr == nil && m.Detected == 0 {
			if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionNodeReachable); c != nil && c.Status == metav1.ConditionFalse {
				if c.Reason == v1alpha2.ReasonFencingPending {
					m.Detected = since
					f.say("%s +%.1fs VM NodeReachable=False (%s)", tag, since.Seconds(), c.Reason)
				} else if !otherReasons[c.Reason] {
					otherReasons[c.Reason] = true
					f.say("%s +%.1fs VM NodeReachable=False (%s): %s", tag, since.Seconds(), c.Reason, c.Message)
				}
			}
		}
		if vmErr == nil && (vm.Status.Phase != v1alpha2.MachineRunning || vm.Status.NodeName != was.Node) {
			leftOld = true
		}
		if m.Fenced == 0 {
			n := &corev1.Node{}
			err := f.c.Get(ctx, client.ObjectKey{Name: was.Node}, n)
			if apierrors.IsNotFound(err) || (err == nil && n.UID != oldUID) {
				m.Fenced = since
				f.say("%s +%.1fs Node %s gone (fenced)", tag, since.Seconds(), was.Node)
			}
		}
		if m.Restarted == 0 {
			var pods corev1.PodList
			if err := f.c.List(ctx, &pods, client.InNamespace(f.fb.NS), client.MatchingLabels{v1alpha2.LabelVMName: f.fb.VM}); err == nil {
				if pod := newLauncherPod(pods.Items, was.Pod, newPod); pod != nil {
					if pod.Name != newPod {
						if newPod != "" {
							f.say("%s +%.1fs launcher pod %s gone or ended before Running; following %s", tag, since.Seconds(), newPod, pod.Name)
						}
						newPod = pod.Name
					}
					if m.PodCreated == 0 {
						m.PodCreated = since
						f.say("%s +%.1fs new launcher pod %s", tag, since.Seconds(), newPod)
					}
					newNode = pod.Spec.NodeName
					if newNode != "" && m.Scheduled == 0 {
						m.Scheduled = since
						f.say("%s +%.1fs launcher pod %s scheduled on %s", tag, since.Seconds(), newPod, newNode)
					}
					if newNode != "" && pod.Status.Phase == corev1.PodRunning {
						m.Restarted = since
						newDir, run.To = pod.Annotations[v1alpha2.AnnotationRunDir], newNode
						f.say("%s +%.1fs launcher pod %s Running on %s", tag, since.Seconds(), newPod, run.To)
					}
				}
			}
		}
		// After the pods, so that a VM Running on a node the same poll found the pod
		// scheduled on counts in this poll.
		if vmErr == nil && m.VMRunning == 0 && newNode != "" && vm.Status.Phase == v1alpha2.MachineRunning &&
			vm.Status.NodeName == newNode && (newNode != was.Node || leftOld) {
			m.VMRunning = since
			f.say("%s +%.1fs VM phase Running on %s", tag, since.Seconds(), newNode)
		}
		if newDir != "" && m.Booted == 0 {
			if span, ok := insts.Span(newDir); ok && !span.First.IsZero() {
				m.Booted = span.First.Sub(t0)
				f.say("%s +%.1fs first heartbeat of the new instance", tag, m.Booted.Seconds())
				if m.VMRunning == 0 {
					// Wait a little for the VM's phase, not past the run's timeout.
					if d := time.Now().Add(vmRunningAfterBoot); d.Before(deadline) {
						deadline = d
					}
				}
			}
		}
		if m.Booted != 0 && m.VMRunning != 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if m.Booted != 0 {
				f.say("%s Note: VM phase not Running on %s by +%.1fs (%s after the first heartbeat was seen, or the run's timeout)",
					tag, bench.OrDash(newNode), time.Since(t0).Seconds(), vmRunningAfterBoot)
				return nil
			}
			run.Failure = f.describe(ctx, fmt.Sprintf("no heartbeat of a new instance within %s of the %s of %s", f.runTimeout, run.Fault, was.Node), newPod)
			f.say("%s FAILED: %s", tag, bench.FirstLine(run.Failure))
			return nil
		}
		if err := bench.Sleep(ctx, bench.WatchInterval); err != nil {
			return err
		}
	}
}

// newLauncherPod picks among the VM's launcher pods the new one to follow: following when
// it is still there and neither terminating nor ended, else the first other such pod not
// named old (the failed instance's); nil when there is none.
func newLauncherPod(pods []corev1.Pod, old, following string) *corev1.Pod {
	var first *corev1.Pod
	for i := range pods {
		pod := &pods[i]
		if pod.Name == old || !pod.DeletionTimestamp.IsZero() || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		if pod.Name == following {
			return pod
		}
		if first == nil {
			first = pod
		}
	}
	return first
}

// describe adds to why the VM's phase and conditions, its pods and the log lines naming
// the new pod.
func (f *failoverBench) describe(ctx context.Context, why, newPod string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var sb strings.Builder
	sb.WriteString(why)
	vm := &v1alpha2.VirtualMachine{}
	if err := f.c.Get(ctx, client.ObjectKey{Namespace: f.fb.NS, Name: f.fb.VM}, vm); err == nil {
		fmt.Fprintf(&sb, "\n    VM phase %s on %s, restartCount %d", vm.Status.Phase, bench.OrDash(vm.Status.NodeName), vm.Status.RestartCount)
		for _, c := range vm.Status.Conditions {
			fmt.Fprintf(&sb, "\n    condition %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message)
		}
	}
	var pods corev1.PodList
	if err := f.c.List(ctx, &pods, client.InNamespace(f.fb.NS), client.MatchingLabels{v1alpha2.LabelVMName: f.fb.VM}); err == nil {
		for _, p := range pods.Items {
			fmt.Fprintf(&sb, "\n    pod %s on %s: %s %s", p.Name, bench.OrDash(p.Spec.NodeName), p.Status.Phase, p.Status.Reason)
		}
	}
	if newPod != "" {
		for _, l := range f.fb.LogLines(newPod) {
			if len(l) > 240 {
				l = l[:240] + "…"
			}
			sb.WriteString("\n    " + l)
		}
	}
	return sb.String()
}

// runSummary says what one run measured, in seconds.
func runSummary(r FailoverRun) string {
	if r.Failure != "" {
		return "FAILED: " + bench.FirstLine(r.Failure)
	}
	ph := r.Marks.Phases()
	sec := func(p Phase) string {
		if !p.OK {
			return "-"
		}
		return fmt.Sprintf("%.1fs", p.D.Seconds())
	}
	s := fmt.Sprintf("%s → %s: detection %s, fencing wait %s, new pod %s, scheduled %s, pod running %s, boot %s, total %s; VM Running at %s; guest gap %s; >1 QEMU in %d of %d samples",
		r.From, bench.OrDash(r.To), sec(ph[PhaseDetection]), sec(ph[PhaseFencingWait]), sec(ph[PhaseNewPod]), sec(ph[PhaseScheduled]), sec(ph[PhasePodRunning]),
		sec(ph[PhaseBoot]), sec(ph[PhaseTotal]), sec(r.Marks.VMRunningPhase()), sec(r.GuestGap()), r.Double, r.Samples)
	if len(r.Overlaps) > 0 {
		s += "; HEARTBEATS OVERLAP: " + strings.Join(r.Overlaps, "; ")
	}
	return s
}
