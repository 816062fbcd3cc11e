package scale

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/controller/fencing"
)

// ScaleOptions configure RunScale.
type ScaleOptions struct {
	Ferry      string // the ferry binary
	StateDir   string // "" a temporary directory
	Port       int
	Nodes      int // simulated nodes
	VMsPerNode int
	// Evacuate is the share of nodes drained at once after the single drain.
	Evacuate float64
	// Fail is how many nodes fail at once (ColdStandby).
	Fail      int
	WaitOther time.Duration
	Out       io.Writer
}

// DefaultScaleOptions is a small run.
func DefaultScaleOptions() ScaleOptions {
	return ScaleOptions{Ferry: "bin/ferry", Port: 17443, Nodes: 10, VMsPerNode: 10, Evacuate: 0.25, Fail: 2, WaitOther: 10 * time.Minute}
}

// ScaleResult is what RunScale measured; a phase is nil when the run did not reach its end.
type ScaleResult struct {
	Nodes, VMsPerNode               int
	Start, Drain, Evacuate, Failure *ScalePhase
}

// ScalePhase is one phase of the scale benchmark.
type ScalePhase struct {
	// Nodes drained or failed (start: all of them); VMs started, moved or restarted.
	Nodes, VMs int
	Took       time.Duration
	// PerVM are, for a drain, each evacuation's time from its creation to Completed (to the
	// second) and, for a failure, each VM's time from the fault to Running on another node.
	PerVM []time.Duration
	Load  ControlPlaneLoad
	// Stages splits a failure's per-VM times (fault, fencing, new pod, pod Ready, Running).
	Stages string
}

// RunScale measures the control plane with simulated nodes (`ferry sim-nodes`: real agents,
// VMs in memory) against `ferry up`'s control plane and the real controllers. Once the
// cluster is up, it returns what it measured also with an error.
func RunScale(ctx context.Context, o ScaleOptions) (_ *ScaleResult, retErr error) {
	w, say := bench.Reporter(o.Out)
	bin, err := filepath.Abs(o.Ferry)
	if err != nil {
		return nil, err
	}
	// A /16 of VM addresses: the default ranges (three /24s) hold 759 VMs.
	cl, err := bench.OpenCluster(ctx, bin, "", o.StateDir, "fs-", o.Port, 0, o.WaitOther, say, "--netns=false", "--fencing-profile", "Fast", "--ip-range", "10.80.0.0/16")
	if err != nil {
		return nil, err
	}
	defer func() { cl.Close(retErr != nil, say) }()
	res := &ScaleResult{Nodes: o.Nodes, VMsPerNode: o.VMsPerNode}
	// The watchdogs are armed and fed but never fire: a hundred simulated nodes share two
	// cores here, and late renewals would reset nodes no real machine would.
	sim, err := bench.StartSimNodes(ctx, bin, cl, o.Nodes, say, "--watchdog-resets=false")
	if err != nil {
		return res, err
	}
	defer sim.Stop()

	cfg, err := clientcmd.BuildConfigFromFlags("", cl.Kubeconfig)
	if err != nil {
		return res, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	c, err := bench.NewClient(cl.Kubeconfig)
	if err != nil {
		return res, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return res, err
	}
	vmCache, err := watchVMs(ctx, cfg, c.Scheme())
	if err != nil {
		return res, err
	}
	m := &scaleMeter{c: c, vmCache: vmCache, cs: cs, metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", o.Port+2000), say: say, kubeconfig: cl.Kubeconfig}
	if err := m.waitNodes(ctx, o.Nodes, 5*time.Minute); err != nil {
		return res, err
	}
	image, _, err := bench.GuestAndClient(ctx, cl.Kubeconfig)
	if err != nil {
		return res, err
	}
	fb := &bench.FerryVM{C: c, NS: "default", Say: say, ImageURL: "file://" + image}
	if err := fb.EnsureImage(ctx); err != nil {
		return res, err
	}
	var rows [][2]string
	add := func(k, v string) { rows = append(rows, [2]string{k, v}); say("%s: %s", k, v) }

	// Start every VM.
	total := o.Nodes * o.VMsPerNode
	m.mark()
	t0 := time.Now()
	if err := createScaleVMs(ctx, c, total); err != nil {
		return res, err
	}
	if err := m.waitVMsRunning(ctx, total, 15*time.Minute); err != nil {
		return res, err
	}
	d := time.Since(t0)
	res.Start = &ScalePhase{Nodes: o.Nodes, VMs: total, Took: d, Load: m.load()}
	add("start", fmt.Sprintf("%d VMs on %d nodes Running in %s (%.0f VMs/min)", total, o.Nodes, d.Round(100*time.Millisecond), float64(total)/d.Minutes()))
	add("start: control plane", res.Start.Load.String())
	add("start: cost", res.Start.Load.PerOp(res.Start.VMs))

	// Drain one node, then a quarter of them at once.
	byNode, err := m.vmsByNode(ctx)
	if err != nil {
		return res, err
	}
	nodes := sortedKeys(byNode)
	// A node's VMs leave it one at a time (migrationsPerNodeOutbound 1), each in about 30 s
	// of control-plane work at 100 nodes: 30 VMs take over 15 minutes. The drains get two
	// minutes a VM, at least 20 minutes, so that the timeout measures nothing but a stuck
	// drain (the 100 × 30 run of 95165da+ hit a fixed 20 minutes with its last VMs moving).
	drainTimeout := max(20*time.Minute, time.Duration(o.VMsPerNode)*2*time.Minute)
	drain := func(names []string) (time.Duration, []time.Duration, error) {
		m.mark()
		opsBefore := time.Now()
		t := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(names))
		for i, n := range names {
			wg.Go(func() {
				out, err := exec.CommandContext(ctx, bin, "k", "--kubeconfig", cl.Kubeconfig, "drain", n, "--ignore-daemonsets",
					"--delete-emptydir-data", "--pod-selector", v1alpha2.LabelVMName, "--timeout", drainTimeout.String()).CombinedOutput()
				if err != nil {
					errs[i] = fmt.Errorf("drain %s: %v: %s", n, err, bench.LastLine(string(out)))
				}
			})
		}
		wg.Wait()
		took := time.Since(t)
		per, err := m.migrationTimes(ctx, opsBefore)
		if err == nil {
			for _, e := range errs {
				if e != nil {
					err = e
				}
			}
		}
		return took, per, err
	}
	one := nodes[:1]
	took, per, err := drain(one)
	if err != nil {
		return res, err
	}
	res.Drain = &ScalePhase{Nodes: len(one), VMs: len(per), Took: took, PerVM: per, Load: m.load()}
	add("drain 1 node", fmt.Sprintf("%d VMs moved in %s; per migration (vmop created → Completed) %s; %.0f migrations/min", len(per), took.Round(100*time.Millisecond), bench.Pct(per), float64(len(per))/took.Minutes()))
	add("drain 1 node: control plane", res.Drain.Load.String())
	add("drain 1 node: cost", res.Drain.Load.PerOp(res.Drain.VMs))
	quarter := max(1, int(math.Round(o.Evacuate*float64(o.Nodes))))
	many := nodes[1:min(len(nodes), 1+quarter)]
	took, per, err = drain(many)
	if err != nil {
		return res, err
	}
	res.Evacuate = &ScalePhase{Nodes: len(many), VMs: len(per), Took: took, PerVM: per, Load: m.load()}
	add(fmt.Sprintf("evacuate %d nodes at once", len(many)), fmt.Sprintf("%d VMs moved in %s; per migration %s; %.0f migrations/min", len(per), took.Round(100*time.Millisecond), bench.Pct(per), float64(len(per))/took.Minutes()))
	add("evacuate: control plane", res.Evacuate.Load.String())
	add("evacuate: cost", res.Evacuate.Load.PerOp(res.Evacuate.VMs))

	// Fail nodes at once (among those still up).
	byNode, err = m.vmsByNode(ctx)
	if err != nil {
		return res, err
	}
	// More unreachable nodes than the storm guard allows (fencing.DefaultMaxUnreachable of
	// all) stop fencing altogether, rightly: fail at most that many.
	fail := o.Fail
	if most := int(math.Ceil(fencing.DefaultMaxUnreachable*float64(o.Nodes))) - 1; fail > most {
		say("Failing %d nodes, not %d: more than %.0f%% of %d unreachable at once pauses fencing (the storm guard)", most, fail, 100*fencing.DefaultMaxUnreachable, o.Nodes)
		fail = most
	}
	var victims []string
	for _, n := range sortedKeys(byNode) {
		if !slices.Contains(nodes[:1+len(many)], n) && len(victims) < fail {
			victims = append(victims, n)
		}
	}
	var lost []string
	for _, n := range victims {
		lost = append(lost, byNode[n]...)
	}
	m.mark()
	t := time.Now()
	for _, n := range victims {
		if err := os.WriteFile(filepath.Join(sim.Dir, "failed", n), nil, 0o644); err != nil {
			return res, err
		}
	}
	back, err := m.waitRestarted(ctx, lost, victims, t, 10*time.Minute)
	if err != nil {
		return res, err
	}
	took = time.Since(t)
	res.Failure = &ScalePhase{Nodes: len(victims), VMs: len(back), Took: took, PerVM: back, Load: m.load()}
	add(fmt.Sprintf("fail %d nodes", len(victims)), fmt.Sprintf("%d VMs Running elsewhere; per VM (fault → Running on another node) %s", len(back), bench.Pct(back)))
	add("fail: control plane", res.Failure.Load.String())
	add("fail: cost", res.Failure.Load.PerOp(res.Failure.VMs))
	if st, err := failoverStages(ctx, c, "default", byNode, victims, t); err == nil {
		res.Failure.Stages = st
		add("fail: stages", st)
	} else {
		say("Could not split the failovers into stages: %v", err)
	}

	fmt.Fprintf(w, "\nScale with simulated nodes: %d nodes × %d VMs (VMs in memory: launcher.RunSimulated; real agents, controllers and control plane)\n", o.Nodes, o.VMsPerNode)
	for _, r := range rows {
		fmt.Fprintf(w, "  %-32s %s\n", r[0], r[1])
	}
	return res, nil
}

func sortedKeys(m map[string][]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// createScaleVMs creates n AlwaysOn VMs booting the shared image read-only, 8 at a time.
func createScaleVMs(ctx context.Context, c client.Client, n int) error {
	work := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				vm := &v1alpha2.VirtualMachine{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%05d", i), Namespace: "default", Labels: map[string]string{bench.LabelBench: bench.BenchMarker}},
					Spec: v1alpha2.VirtualMachineSpec{
						RunPolicy:       v1alpha2.AlwaysOn,
						CPU:             v1alpha2.CPUSpec{Cores: 1, CoreFraction: "10%"},
						Memory:          v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
						BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.ClusterImageDevice, Name: bench.ImageName}},
					},
				}
				if err := c.Create(ctx, vm); err != nil && !strings.Contains(err.Error(), "already exists") {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("creating VMs: %w", err)
	default:
		return nil
	}
}
