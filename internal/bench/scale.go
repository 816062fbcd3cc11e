package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
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
	w, say := reporter(o.Out)
	bin, err := filepath.Abs(o.Ferry)
	if err != nil {
		return nil, err
	}
	// A /16 of VM addresses: the default /24 holds 253 VMs.
	cl, err := openCluster(ctx, bin, "", o.StateDir, "fs-", o.Port, 0, o.WaitOther, say, "--netns=false", "--fencing-profile", "Fast", "--ip-range", "10.80.0.0/16")
	if err != nil {
		return nil, err
	}
	defer func() { cl.close(retErr != nil, say) }()
	res := &ScaleResult{Nodes: o.Nodes, VMsPerNode: o.VMsPerNode}
	// The watchdogs are armed and fed but never fire: a hundred simulated nodes share two
	// cores here, and late renewals would reset nodes no real machine would.
	sim, err := startSimNodes(ctx, bin, cl, o.Nodes, say, "--watchdog-resets=false")
	if err != nil {
		return res, err
	}
	defer sim.stop()

	cfg, err := clientcmd.BuildConfigFromFlags("", cl.kubeconfig)
	if err != nil {
		return res, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	c, err := newClient(cl.kubeconfig)
	if err != nil {
		return res, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return res, err
	}
	m := &scaleMeter{c: c, cs: cs, metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", o.Port+2000), say: say, kubeconfig: cl.kubeconfig}
	if err := m.waitNodes(ctx, o.Nodes, 5*time.Minute); err != nil {
		return res, err
	}
	image, _, err := guestAndClient(ctx, cl.kubeconfig)
	if err != nil {
		return res, err
	}
	fb := &ferryBench{c: c, ns: "default", say: say, imageURL: "file://" + image}
	if err := fb.ensureImage(ctx); err != nil {
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

	// Drain one node, then a quarter of them at once.
	byNode, err := m.vmsByNode(ctx)
	if err != nil {
		return res, err
	}
	nodes := sortedKeys(byNode)
	drain := func(names []string) (time.Duration, []time.Duration, error) {
		m.mark()
		opsBefore := time.Now()
		t := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(names))
		for i, n := range names {
			wg.Go(func() {
				out, err := exec.CommandContext(ctx, bin, "k", "--kubeconfig", cl.kubeconfig, "drain", n, "--ignore-daemonsets",
					"--delete-emptydir-data", "--pod-selector", v1alpha2.LabelVMName, "--timeout", "20m").CombinedOutput()
				if err != nil {
					errs[i] = fmt.Errorf("drain %s: %v: %s", n, err, lastLine(string(out)))
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
	add("drain 1 node", fmt.Sprintf("%d VMs moved in %s; per migration (vmop created → Completed) %s; %.0f migrations/min", len(per), took.Round(100*time.Millisecond), pct(per), float64(len(per))/took.Minutes()))
	add("drain 1 node: control plane", res.Drain.Load.String())
	quarter := max(1, int(math.Round(o.Evacuate*float64(o.Nodes))))
	many := nodes[1:min(len(nodes), 1+quarter)]
	took, per, err = drain(many)
	if err != nil {
		return res, err
	}
	res.Evacuate = &ScalePhase{Nodes: len(many), VMs: len(per), Took: took, PerVM: per, Load: m.load()}
	add(fmt.Sprintf("evacuate %d nodes at once", len(many)), fmt.Sprintf("%d VMs moved in %s; per migration %s; %.0f migrations/min", len(per), took.Round(100*time.Millisecond), pct(per), float64(len(per))/took.Minutes()))
	add("evacuate: control plane", res.Evacuate.Load.String())

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
		if err := os.WriteFile(filepath.Join(sim.dir, "failed", n), nil, 0o644); err != nil {
			return res, err
		}
	}
	back, err := m.waitRestarted(ctx, lost, victims, t, 10*time.Minute)
	if err != nil {
		return res, err
	}
	took = time.Since(t)
	res.Failure = &ScalePhase{Nodes: len(victims), VMs: len(back), Took: took, PerVM: back, Load: m.load()}
	add(fmt.Sprintf("fail %d nodes", len(victims)), fmt.Sprintf("%d VMs Running elsewhere; per VM (fault → Running on another node) %s", len(back), pct(back)))
	add("fail: control plane", res.Failure.Load.String())
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

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

func sortedKeys(m map[string][]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// pct is "p50 X, p99 Y, max Z" of ds.
func pct(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(math.Ceil(f*float64(len(s))))-1)] }
	return fmt.Sprintf("p50 %s, p99 %s, max %s", q(0.5).Round(10*time.Millisecond), q(0.99).Round(10*time.Millisecond), s[len(s)-1].Round(10*time.Millisecond))
}

// simNodes is a running `ferry sim-nodes`.
type simNodes struct {
	cmd  *exec.Cmd
	dir  string
	done chan struct{}
}

// startSimNodes runs `ferry sim-nodes` (its log in the state directory) with n nodes and
// extra flags.
func startSimNodes(ctx context.Context, bin string, cl *benchCluster, n int, say func(string, ...any), extra ...string) (*simNodes, error) {
	dir := filepath.Join(cl.stateDir, "sim")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(cl.stateDir, "sim-nodes.log"))
	if err != nil {
		return nil, err
	}
	args := append([]string{"sim-nodes", "--kubeconfig", cl.kubeconfig, "--count", strconv.Itoa(n), "--state-dir", dir}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s := &simNodes{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(s.done) }()
	say("Started %d simulated nodes (pid %d, log %s)", n, cmd.Process.Pid, logf.Name())
	return s, nil
}

func (s *simNodes) stop() { stopProcess(s.cmd, s.done, 30*time.Second) }

// createScaleVMs creates n AlwaysOn VMs booting the shared image read-only, 8 at a time.
func createScaleVMs(ctx context.Context, c client.Client, n int) error {
	work := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				vm := &v1alpha2.VirtualMachine{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%05d", i), Namespace: "default", Labels: map[string]string{labelBench: benchMarker}},
					Spec: v1alpha2.VirtualMachineSpec{
						RunPolicy:       v1alpha2.AlwaysOn,
						CPU:             v1alpha2.CPUSpec{Cores: 1, CoreFraction: "10%"},
						Memory:          v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
						BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.ClusterImageDevice, Name: imageName}},
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

// scaleMeter reads the cluster and the control plane's own figures.
type scaleMeter struct {
	c          client.Client
	cs         *kubernetes.Clientset
	metricsURL string
	say        func(string, ...any)
	kubeconfig string // the cluster's, which its controller was started with

	at       time.Time
	ctlCPU   float64 // seconds
	requests float64
	recon    map[string]float64 // bucket upper bound → cumulative count
}

func (m *scaleMeter) waitNodes(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var nodes corev1.NodeList
		ready := 0
		if err := m.c.List(ctx, &nodes); err == nil {
			for _, nd := range nodes.Items {
				for _, c := range nd.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
		}
		if ready >= n {
			m.say("%d nodes Ready", ready)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes Ready after %s", ready, n, timeout)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

func (m *scaleMeter) vms(ctx context.Context) ([]v1alpha2.VirtualMachine, error) {
	var l v1alpha2.VirtualMachineList
	err := m.c.List(ctx, &l, client.MatchingLabels{labelBench: benchMarker})
	return l.Items, err
}

func (m *scaleMeter) waitVMsRunning(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := time.Now()
	for {
		vms, err := m.vms(ctx)
		running := 0
		if err == nil {
			for _, v := range vms {
				if v.Status.Phase == v1alpha2.MachineRunning {
					running++
				}
			}
		}
		if running >= n {
			return nil
		}
		if time.Since(last) > 30*time.Second {
			m.say("%d of %d VMs Running", running, n)
			last = time.Now()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d VMs Running after %s", running, n, timeout)
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

func (m *scaleMeter) vmsByNode(ctx context.Context) (map[string][]string, error) {
	vms, err := m.vms(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, v := range vms {
		out[v.Status.NodeName] = append(out[v.Status.NodeName], v.Name)
	}
	return out, nil
}

// migrationTimes are the creation → Completed times of the evacuation operations created
// since t (Completed as the operation's condition records it, to the second).
func (m *scaleMeter) migrationTimes(ctx context.Context, since time.Time) ([]time.Duration, error) {
	var ops v1alpha2.VirtualMachineOperationList
	if err := m.c.List(ctx, &ops); err != nil {
		return nil, err
	}
	var out []time.Duration
	for _, op := range ops.Items {
		if op.CreationTimestamp.Time.Before(since.Truncate(time.Second)) || op.Status.Phase != v1alpha2.OpCompleted {
			continue
		}
		end := op.CreationTimestamp.Time
		for _, c := range op.Status.Conditions {
			if c.LastTransitionTime.After(end) {
				end = c.LastTransitionTime.Time
			}
		}
		out = append(out, end.Sub(op.CreationTimestamp.Time))
	}
	return out, nil
}

// waitRestarted waits until every VM in names runs on a node not in failed, and returns
// for each how long after t it was first seen so (polled every 500 ms).
func (m *scaleMeter) waitRestarted(ctx context.Context, names, failed []string, t time.Time, timeout time.Duration) ([]time.Duration, error) {
	seen := map[string]time.Duration{}
	for {
		vms, err := m.vms(ctx)
		if err == nil {
			for _, v := range vms {
				if _, ok := seen[v.Name]; !ok && slices.Contains(names, v.Name) && v.Status.Phase == v1alpha2.MachineRunning && !slices.Contains(failed, v.Status.NodeName) {
					seen[v.Name] = time.Since(t)
				}
			}
		}
		if len(seen) == len(names) {
			var out []time.Duration
			for _, d := range seen {
				out = append(out, d)
			}
			return out, nil
		}
		if time.Since(t) > timeout {
			return nil, fmt.Errorf("%d of %d VMs of the failed nodes Running elsewhere after %s", len(seen), len(names), timeout)
		}
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// mark records the counters a later report measures from.
func (m *scaleMeter) mark() {
	m.at = time.Now()
	m.ctlCPU, _ = controllerCPU(m.kubeconfig)
	m.requests = m.apiRequests()
	m.recon = m.reconcileBuckets()
}

// report says what the control plane did since mark over the phase d.
func (m *scaleMeter) report(d time.Duration) string { return m.load().String() }

// ControlPlaneLoad is what the control plane did over a phase of the scale benchmark.
type ControlPlaneLoad struct {
	// CPUPercent is the controller's CPU time over the phase, in % of one core; RSS its
	// resident memory at the end, in bytes.
	CPUPercent float64
	RSS        int64
	// RequestsPerSec is the apiserver's request rate (apiserver_request_total).
	RequestsPerSec float64
	// Reconcile is the VM controller's reconcile time over the phase.
	Reconcile ReconcileTimes
}

func (l ControlPlaneLoad) String() string {
	return fmt.Sprintf("controller CPU %.0f%% of a core, RSS %d MiB; apiserver %.0f requests/s; VM reconcile %s",
		l.CPUPercent, l.RSS>>20, l.RequestsPerSec, l.Reconcile)
}

// load is what the control plane did since mark.
func (m *scaleMeter) load() ControlPlaneLoad {
	el := time.Since(m.at).Seconds()
	cpu, rss := controllerCPU(m.kubeconfig)
	reqs := m.apiRequests() - m.requests
	now := m.reconcileBuckets()
	diff := map[string]float64{}
	for le, v := range now {
		diff[le] = v - m.recon[le]
	}
	return ControlPlaneLoad{CPUPercent: 100 * (cpu - m.ctlCPU) / el, RSS: rss, RequestsPerSec: reqs / el, Reconcile: reconcileTimes(diff)}
}

// controllerCPU is the CPU seconds so far (and, second, the RSS in bytes) of the cluster's
// controller: the process whose command line is "controller --kubeconfig KUBECONFIG" (another
// cluster may run beside it).
func controllerCPU(kubeconfig string) (float64, int64) {
	out, err := exec.Command("pgrep", "-f", "controller --kubeconfig "+filepath.Dir(kubeconfig)).Output()
	if err != nil {
		return 0, 0
	}
	pid := strings.Fields(string(out))[0]
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return (ut + st) / 100, rss * int64(os.Getpagesize())
}

var requestLine = regexp.MustCompile(`^apiserver_request_total\{[^}]*\} ([0-9.e+]+)$`)

// apiRequests is the apiserver's request count so far.
func (m *scaleMeter) apiRequests() float64 {
	b, err := m.cs.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		return 0
	}
	var sum float64
	s := bufio.NewScanner(strings.NewReader(string(b)))
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		if mm := requestLine.FindStringSubmatch(s.Text()); mm != nil {
			v, _ := strconv.ParseFloat(mm[1], 64)
			sum += v
		}
	}
	return sum
}

var reconcileLine = regexp.MustCompile(`^controller_runtime_reconcile_time_seconds_bucket\{controller="virtualmachine",le="([^"]+)"\} ([0-9.e+]+)$`)

// reconcileBuckets reads the VM controller's reconcile time histogram (cumulative).
func (m *scaleMeter) reconcileBuckets() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(m.metricsURL)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if mm := reconcileLine.FindStringSubmatch(s.Text()); mm != nil {
			v, _ := strconv.ParseFloat(mm[2], 64)
			out[mm[1]] = v
		}
	}
	return out
}

// quantiles reads p50 and p99 (bucket upper bounds) from a cumulative histogram.
func quantiles(b map[string]float64) string { return reconcileTimes(b).String() }

// ReconcileTimes are the p50 and p99 of a reconcile time histogram, as the upper bounds of
// the buckets they fall in, and the number of reconciles (0: none, or no histogram).
type ReconcileTimes struct {
	N        int64
	P50, P99 BucketBound
}

func (r ReconcileTimes) String() string {
	if r.N == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s, p99 %s (%d reconciles)", r.P50, r.P99, r.N)
}

// BucketBound is the upper bound of the histogram bucket a quantile falls in: Le, or above
// the largest finite bound (Inf). OK is false when no bucket held it.
type BucketBound struct {
	Le      time.Duration
	Inf, OK bool
}

func (b BucketBound) String() string {
	switch {
	case !b.OK:
		return "-"
	case b.Inf:
		return "> largest bucket"
	}
	return "≤ " + b.Le.String()
}

// reconcileTimes reads p50 and p99 from a cumulative histogram (bucket upper bound in
// seconds → count).
func reconcileTimes(b map[string]float64) ReconcileTimes {
	type bk struct {
		le float64
		n  float64
	}
	var bs []bk
	total := 0.0
	for le, n := range b {
		v, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			v, err = math.Inf(1), nil
		}
		if err != nil {
			continue
		}
		bs = append(bs, bk{v, n})
		if math.IsInf(v, 1) {
			total = n
		}
	}
	if total == 0 {
		return ReconcileTimes{}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	q := func(f float64) BucketBound {
		for _, x := range bs {
			if x.n >= f*total {
				if math.IsInf(x.le, 1) {
					return BucketBound{Inf: true, OK: true}
				}
				return BucketBound{Le: time.Duration(x.le * float64(time.Second)), OK: true}
			}
		}
		return BucketBound{}
	}
	return ReconcileTimes{N: int64(total), P50: q(0.5), P99: q(0.99)}
}
