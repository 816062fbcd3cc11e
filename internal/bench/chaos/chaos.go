package chaos

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
)

// ChaosOptions configure RunChaos.
type ChaosOptions struct {
	Ferry    string // the ferry binary
	StateDir string // "" a temporary directory
	Port     int
	// Real runs real guests on `ferry up` nodes; otherwise simulated nodes (ferry sim-nodes).
	Real bool
	// Nodes and VMs of the cluster.
	Nodes, VMs int
	Trials     int
	// Seed picks every trial's operation, fault and timing; trial i uses (Seed, i), so one
	// trial replays alone with --seed S --first-trial i --trials 1.
	Seed       uint64
	FirstTrial int
	// Settle is how long a trial may take to settle after its fault before it counts as a
	// violation.
	Settle    time.Duration
	WaitOther time.Duration
	// Plan, when set, fixes the trials' operations and faults ("drain+kill-agent"), in turn;
	// their timing still comes from the seed.
	Plan []string
	// Hold, when set, is how long every freeze and cut lasts; Delay, when set, when every
	// fault comes (default: both drawn from the seed).
	Hold, Delay time.Duration
	// BrokenWatchdog (simulated nodes only) keeps nodes from resetting: a node cut off
	// runs on, and chaos trials must report its VMs running twice.
	BrokenWatchdog bool
	Out            io.Writer
}

// DefaultChaosOptions is a short simulated run.
func DefaultChaosOptions() ChaosOptions {
	return ChaosOptions{Ferry: "bin/ferry", Port: 17443, Nodes: 5, VMs: 10, Trials: 20, Seed: 1, Settle: 3 * time.Minute, WaitOther: 10 * time.Minute}
}

// The operations a trial starts, and the faults it injects during them.
var (
	chaosOps    = []string{"migrate", "drain", "failover"}
	chaosFaults = []string{"none", "kill-source-launcher", "kill-target-launcher", "kill-agent", "freeze-agent", "cut-network", "restart-controller", "restart-apiserver"}
)

// chaosDriver injects faults into one kind of cluster and watches its guests.
type chaosDriver interface {
	powerOff(ctx context.Context, node string) error
	powerOn(ctx context.Context, node string) error
	killAgent(ctx context.Context, node string) error
	// freeze and cut end by themselves after d.
	freeze(ctx context.Context, node string, d time.Duration) error
	cut(ctx context.Context, node string, d time.Duration) error
	killLauncher(ctx context.Context, pod *corev1.Pod) error
	restartController(ctx context.Context) error
	restartAPIServer(ctx context.Context) error
	// running counts the guests of each VM ("ns/name") that run now.
	running(ctx context.Context) (map[string]int, error)
	// overlaps names the VMs whose guests ran in two places at once since the last call.
	overlaps(ctx context.Context) ([]string, error)
	// faultTimes are the longest freeze or cut a trial injects (beyond the watchdog's
	// timeout, so that some reset the node) and the latest a fault comes after the
	// operation started.
	faultTimes() (longest, latest time.Duration)
}

// ChaosResult counts what a chaos run saw.
type ChaosResult struct {
	Trials     int
	Violations int
	ByOp       map[string]int
	ByFault    map[string]int
	// Failed lists the trials with a violation: seed, trial and what was violated.
	Failed []string
	// Settle are the times from a trial's start until the cluster had settled.
	Settle []time.Duration
}

// chaosRun is one run's cluster and state.
type chaosRun struct {
	o    ChaosOptions
	bin  string
	c    client.Client
	kube string
	drv  chaosDriver
	say  func(string, ...any)
	ns   string

	nodes []string
	// vms: name → what must not change (address, disk UID).
	vms map[string]vmIdentity
}

type vmIdentity struct {
	ip   string
	disk types.UID
}

// chaosTrial is one trial's plan and log.
type chaosTrial struct {
	index int
	seed  uint64
	op    string
	fault string
	delay time.Duration
	hold  time.Duration // how long a freeze or cut lasts

	mu  sync.Mutex
	log []string
	t0  time.Time
}

func (t *chaosTrial) logf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.log = append(t.log, fmt.Sprintf("%+7.2fs  %s", time.Since(t.t0).Seconds(), fmt.Sprintf(format, args...)))
}

// plan draws trial i's operation, fault and timing from the run's seed.
func plan(seed uint64, i int, latest, longest time.Duration) *chaosTrial {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	t := &chaosTrial{index: i, seed: seed}
	t.op = chaosOps[r.IntN(len(chaosOps))]
	t.fault = chaosFaults[r.IntN(len(chaosFaults))]
	t.delay = time.Duration(r.Int64N(int64(latest)))
	t.hold = time.Second + time.Duration(r.Int64N(int64(longest-time.Second)))
	return t
}

// RunChaos runs the trials and prints the counts and, for each violation, the trial's seed
// and event log.
func RunChaos(ctx context.Context, o ChaosOptions) (res *ChaosResult, retErr error) {
	w, say := bench.Reporter(o.Out)
	for _, p := range o.Plan {
		op, fault, _ := strings.Cut(p, "+")
		if !slices.Contains(chaosOps, op) || !slices.Contains(chaosFaults, fault) {
			return nil, fmt.Errorf("plan %q: want OPERATION+FAULT, operations %s, faults %s", p, strings.Join(chaosOps, ", "), strings.Join(chaosFaults, ", "))
		}
	}
	run, closeRun, err := openChaos(ctx, o, say)
	if err != nil {
		return nil, err
	}
	defer func() { closeRun(retErr != nil || (res != nil && res.Violations > 0)) }()
	res = &ChaosResult{ByOp: map[string]int{}, ByFault: map[string]int{}}
	longest, latest := run.drv.faultTimes()
	for i := o.FirstTrial; i < o.FirstTrial+o.Trials; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		t := plan(o.Seed, i, latest, longest)
		if o.Hold > 0 {
			t.hold = o.Hold
		}
		if o.Delay > 0 {
			t.delay = o.Delay
		}
		if len(o.Plan) > 0 {
			t.op, t.fault, _ = strings.Cut(o.Plan[(i-o.FirstTrial)%len(o.Plan)], "+")
		}
		violations, settled, err := run.trial(ctx, t)
		if err != nil {
			return res, fmt.Errorf("trial %d: %w", i, err)
		}
		res.Trials++
		res.ByOp[t.op]++
		res.ByFault[t.fault]++
		res.Settle = append(res.Settle, settled)
		if len(violations) > 0 {
			res.Violations++
			res.Failed = append(res.Failed, fmt.Sprintf("--seed %d --first-trial %d: %s", o.Seed, i, strings.Join(violations, "; ")))
			say("Trial %d (%s + %s at %s): %d VIOLATION(S):", i, t.op, t.fault, t.delay.Round(10*time.Millisecond), len(violations))
			for _, v := range violations {
				fmt.Fprintf(w, "    %s\n", v)
			}
			fmt.Fprintf(w, "  Event log of trial %d (replay: --seed %d --first-trial %d --trials 1):\n", i, o.Seed, i)
			for _, l := range t.log {
				fmt.Fprintf(w, "    %s\n", l)
			}
		} else {
			say("Trial %d: %s + %s at %s (hold %s): ok, settled in %s", i, t.op, t.fault, t.delay.Round(10*time.Millisecond), t.hold.Round(100*time.Millisecond), settled.Round(100*time.Millisecond))
		}
	}
	kind := "simulated nodes"
	if o.Real {
		kind = "real guests (QEMU)"
	}
	fmt.Fprintf(w, "\nChaos: %d trials on %d %s with %d VMs, seed %d: %d with an invariant violated\n", res.Trials, o.Nodes, kind, o.VMs, o.Seed, res.Violations)
	fmt.Fprintf(w, "  operations: %s\n  faults:     %s\n  settle (trial start → invariants hold): %s\n", counts(res.ByOp), counts(res.ByFault), bench.Pct(res.Settle))
	for _, f := range res.Failed {
		fmt.Fprintf(w, "  violated: %s\n", f)
	}
	return res, nil
}

func counts(m map[string]int) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var out []string
	for _, k := range ks {
		out = append(out, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(out, ", ")
}

// trial runs one trial: its operation, its fault, healing, settling, and the checks.
func (r *chaosRun) trial(ctx context.Context, t *chaosTrial) (violations []string, settled time.Duration, err error) {
	if _, err := r.drv.overlaps(ctx); err != nil { // forget what came before
		return nil, 0, err
	}
	// What an earlier trial could not heal (an uncordon lost to an apiserver restart) is
	// healed first: every node powered on and schedulable.
	for _, n := range r.nodes {
		if err := r.drv.powerOn(ctx, n); err != nil {
			return nil, 0, fmt.Errorf("powering on %s: %w", n, err)
		}
		if err := r.uncordon(ctx, n); err != nil {
			return nil, 0, err
		}
	}
	t.t0 = time.Now()
	t.logf("trial %d (seed %d): %s, fault %s after %s (hold %s)", t.index, t.seed, t.op, t.fault, t.delay.Round(time.Millisecond), t.hold.Round(time.Millisecond))
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); r.watch(wctx, t) }()
	defer func() { stopWatch(); <-watchDone }()

	vms, err := r.listVMs(ctx)
	if err != nil {
		return nil, 0, err
	}
	r.shuffleNodes(t)
	// The operation's VM and node: a running VM, and the node it runs on.
	var vm *v1alpha2.VirtualMachine
	for _, name := range sortedVMNames(vms) {
		v := vms[name]
		if v.Status.Phase == v1alpha2.MachineRunning && v.Status.NodeName != "" {
			if vm == nil || rand.New(rand.NewPCG(t.seed, uint64(t.index)+1<<32)).IntN(2) == 0 {
				vm = v
			}
		}
	}
	if vm == nil {
		return nil, 0, fmt.Errorf("no VM runs")
	}
	node := vm.Status.NodeName
	opStart := time.Now()
	var opWG sync.WaitGroup
	var opErr error
	drained, failed := "", ""
	switch t.op {
	case "migrate":
		op := &v1alpha2.VirtualMachineOperation{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "chaos-", Namespace: r.ns, Labels: map[string]string{bench.LabelBench: bench.BenchMarker}},
			Spec:       v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: vm.Name},
		}
		if err := r.c.Create(ctx, op); err != nil {
			return nil, 0, fmt.Errorf("creating the Evict operation: %w", err)
		}
		t.logf("created %s: Evict %s (on %s)", op.Name, vm.Name, node)
	case "drain":
		drained = node
		t.logf("kubectl drain %s (it runs %s …)", node, vm.Name)
		opWG.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, r.o.Settle)
			defer cancel()
			out, err := exec.CommandContext(dctx, r.bin, "k", "--kubeconfig", r.kube, "drain", node, "--ignore-daemonsets",
				"--delete-emptydir-data", "--pod-selector", v1alpha2.LabelVMName, "--timeout", r.o.Settle.String()).CombinedOutput()
			if err != nil {
				opErr = fmt.Errorf("%v: %s", err, bench.LastLine(string(out)))
			}
			t.logf("drain %s ended: %v", node, err)
		})
	case "failover":
		failed = node
		t.logf("power off %s (it runs %s …)", node, vm.Name)
		if err := r.drv.powerOff(ctx, node); err != nil {
			return nil, 0, err
		}
	}

	// The fault, after its delay.
	if err := bench.Sleep(ctx, t.delay); err != nil {
		return nil, 0, err
	}
	if err := r.inject(ctx, t, vm, node, opStart); err != nil {
		t.logf("fault %s not injected: %v", t.fault, err)
	}

	// Heal what the trial broke once the operation is over: a drained node is uncordoned,
	// a failed node powered on once its VMs run elsewhere.
	deadline := t.t0.Add(r.o.Settle)
	if failed != "" {
		_ = r.waitFor(ctx, deadline, func() (bool, string) {
			cur, err := r.listVMs(ctx)
			if err != nil {
				return false, err.Error()
			}
			for _, v := range cur {
				if v.Status.NodeName == failed || v.Status.Phase != v1alpha2.MachineRunning {
					return false, v.Name + " not yet Running elsewhere"
				}
			}
			return true, ""
		})
		t.logf("power on %s", failed)
		if err := r.drv.powerOn(ctx, failed); err != nil {
			return nil, 0, err
		}
	}
	opWG.Wait()
	if drained != "" {
		if opErr != nil {
			t.logf("drain failed: %v", opErr)
		}
		if err := r.uncordon(ctx, drained); err != nil {
			t.logf("uncordon %s: %v", drained, err)
		} else {
			t.logf("uncordoned %s", drained)
		}
	}

	// Settle: every VM runs once on a Ready node, every operation is final.
	var why string
	ok := r.waitFor(ctx, deadline, func() (bool, string) {
		v, w := r.check(ctx, opStart, false)
		why = strings.Join(v, "; ")
		return len(v) == 0, w
	})
	settled = time.Since(t.t0)
	if ctx.Err() != nil {
		return nil, 0, ctx.Err()
	}
	violations, _ = r.check(ctx, opStart, true)
	if !ok && len(violations) == 0 {
		violations = []string{"did not settle within " + r.o.Settle.String() + ": " + why}
	}
	t.logf("settled after %s; %d violation(s)", settled.Round(100*time.Millisecond), len(violations))
	// Operations of earlier trials are done with: keep the list short.
	r.pruneOperations(ctx, opStart)
	return violations, settled, nil
}

// uncordon makes the node schedulable, retrying for a minute (the apiserver may be
// restarting).
func (r *chaosRun) uncordon(ctx context.Context, node string) error {
	var err error
	r.waitFor(ctx, time.Now().Add(time.Minute), func() (bool, string) {
		err = bench.SetUnschedulable(ctx, r.c, node, false)
		return err == nil, fmt.Sprint(err)
	})
	if err != nil {
		return fmt.Errorf("uncordon %s: %w", node, err)
	}
	return nil
}

func sortedVMNames(m map[string]*v1alpha2.VirtualMachine) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (r *chaosRun) shuffleNodes(t *chaosTrial) {
	rng := rand.New(rand.NewPCG(t.seed, uint64(t.index)+2<<32))
	rng.Shuffle(len(r.nodes), func(i, j int) { r.nodes[i], r.nodes[j] = r.nodes[j], r.nodes[i] })
}

// inject injects the trial's fault; its node is the operation's source node, or the
// migration target's when the fault is about the target.
func (r *chaosRun) inject(ctx context.Context, t *chaosTrial, vm *v1alpha2.VirtualMachine, node string, opStart time.Time) error {
	target := func() (*corev1.Pod, error) {
		// The target is the VM's newest launcher pod not on the source node; wait a little
		// for it.
		var found *corev1.Pod
		ok := r.waitFor(ctx, time.Now().Add(10*time.Second), func() (bool, string) {
			pods, err := r.launcherPods(ctx, vm.Name)
			if err != nil {
				return false, err.Error()
			}
			for i := range pods {
				p := &pods[i]
				if p.Spec.NodeName != "" && p.Spec.NodeName != node && p.CreationTimestamp.Time.After(opStart.Add(-time.Second)) && p.DeletionTimestamp == nil {
					found = p
					return true, ""
				}
			}
			return false, "no target pod yet"
		})
		if !ok {
			return nil, fmt.Errorf("no migration target of %s appeared within 10s", vm.Name)
		}
		return found, nil
	}
	switch t.fault {
	case "none":
		return nil
	case "kill-source-launcher":
		pods, err := r.launcherPods(ctx, vm.Name)
		if err != nil {
			return err
		}
		for i := range pods {
			if pods[i].Spec.NodeName == node && pods[i].DeletionTimestamp == nil {
				t.logf("kill launcher of pod %s on %s (source)", pods[i].Name, node)
				return r.drv.killLauncher(ctx, &pods[i])
			}
		}
		return fmt.Errorf("no source pod of %s on %s", vm.Name, node)
	case "kill-target-launcher":
		p, err := target()
		if err != nil {
			return err
		}
		t.logf("kill launcher of pod %s on %s (target)", p.Name, p.Spec.NodeName)
		return r.drv.killLauncher(ctx, p)
	}
	// Agent and network faults hit the source node, or the target's when one is known.
	victim := node
	if t.op == "failover" || rand.New(rand.NewPCG(t.seed, uint64(t.index)+3<<32)).IntN(2) == 0 {
		if p, err := target(); err == nil {
			victim = p.Spec.NodeName
		} else {
			victim = r.nodes[0]
		}
	}
	switch t.fault {
	case "kill-agent":
		t.logf("kill the agent of %s", victim)
		return r.drv.killAgent(ctx, victim)
	case "freeze-agent":
		t.logf("freeze the agent of %s for %s", victim, t.hold.Round(time.Millisecond))
		return r.drv.freeze(ctx, victim, t.hold)
	case "cut-network":
		t.logf("cut the network of %s for %s", victim, t.hold.Round(time.Millisecond))
		return r.drv.cut(ctx, victim, t.hold)
	case "restart-controller":
		t.logf("kill the controller (ferry up restarts it)")
		return r.drv.restartController(ctx)
	case "restart-apiserver":
		t.logf("restart the apiserver and etcd")
		return r.drv.restartAPIServer(ctx)
	}
	return fmt.Errorf("unknown fault %q", t.fault)
}
