package failover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
)

// FalseFencingOptions configure RunFalseFencing.
type FalseFencingOptions struct {
	// FerryBin is the ferry binary that runs the clusters; empty: the ferry next to the
	// running executable, else bin/ferry.
	FerryBin string
	// Profiles to run, one cluster each.
	Profiles []string
	// Duration of the load on each cluster.
	Duration time.Duration
	// Pause is how long the control plane is frozen (SIGSTOP of `ferry up`), every
	// PauseEvery.
	Pause, PauseEvery time.Duration
	// Delay and Jitter are the netem latency added on each node's host link.
	Delay, Jitter time.Duration
	// Busy is the number of busy-loop processes (0: 2 × the CPUs).
	Busy int
	Port int
	// WaitOther is how long to wait for another `ferry up` on this machine to end.
	WaitOther time.Duration
	// Keep leaves each cluster's state directory in place.
	Keep bool
	Out  io.Writer
}

// DefaultFalseFencingOptions are the command's defaults.
func DefaultFalseFencingOptions() FalseFencingOptions {
	return FalseFencingOptions{
		Profiles:   slices.Clone(fencingProfiles),
		Duration:   120 * time.Second,
		Pause:      1500 * time.Millisecond,
		PauseEvery: 10 * time.Second,
		Delay:      150 * time.Millisecond,
		Jitter:     100 * time.Millisecond,
		Port:       17443,
		Out:        os.Stdout,
	}
}

// defaultProfile is what `ferry up` gives its nodes unless told otherwise.
const defaultProfile = string(deckhousev1.ProfileFast)

// FalseFencingReport is what RunFalseFencing measured, with the load it applied.
type FalseFencingReport struct {
	Results []FalseFencingResult
	// Duration is how long the load lasted on each cluster.
	Duration time.Duration
	// Busy is how many busy-loop processes ran on CPUs CPUs.
	Busy, CPUs int
	// Netem says what latency netem added on the nodes' host links, or why none.
	Netem string
	// Pause is how long the control plane was frozen, every PauseEvery.
	Pause, PauseEvery time.Duration
}

// RunFalseFencing runs, for each profile, a healthy `ferry up --nodes 3` under load (busy
// CPUs, a slow network to the nodes, a control plane frozen now and then) and counts the
// nodes that got fenced or reset anyway. It prints the table to o.Out and removes the load
// (processes, qdiscs, frozen control plane) also on error or when ctx is cancelled. Once
// it has measured, it returns what it measured also with an error.
func RunFalseFencing(ctx context.Context, o FalseFencingOptions) (*FalseFencingReport, error) {
	out, say := bench.Reporter(o.Out)
	if o.Duration <= 0 {
		return nil, errors.New("--duration must be positive")
	}
	if o.Pause < 0 || (o.Pause > 0 && o.Pause >= o.PauseEvery) {
		return nil, errors.New("--pause must be shorter than --pause-every")
	}
	var profiles []string
	for _, p := range o.Profiles {
		p = strings.TrimSpace(p)
		if !slices.Contains(fencingProfiles, p) {
			return nil, fmt.Errorf("unknown profile %q (Critical, Fast, Balanced, Tolerant)", p)
		}
		profiles = append(profiles, p)
	}
	if len(profiles) == 0 {
		return nil, errors.New("no profile to run")
	}
	if o.Busy == 0 {
		o.Busy = 2 * runtime.NumCPU()
	}
	bin, err := bench.FerryBinary(o.FerryBin)
	if err != nil {
		return nil, err
	}

	var results []FalseFencingResult
	var runErr error
	netem, noNetem := "not tried", false
	for i, p := range profiles {
		res := FalseFencingResult{Profile: p}
		wait := o.WaitOther
		if i > 0 {
			wait = max(wait, 30*time.Second) // the previous cluster's network may still go
		}
		ff := &falseFencing{o: o, bin: bin, say: say, waitOther: wait, noNetem: noNetem}
		if noNetem {
			ff.netem = netem
		}
		err := ff.profile(ctx, &res)
		if ff.netem != "" {
			netem, noNetem = ff.netem, ff.noNetem
		}
		if err != nil {
			res.Failure = err.Error()
			say("[%s] FAILED: %v", p, err)
		}
		results = append(results, res)
		if ctx.Err() != nil {
			runErr = errors.New("interrupted; the table shows what was measured")
			break
		}
	}

	fmt.Fprintf(out, "\nFalse-fencing benchmark: 3 healthy nodes per profile, %s under load: %d busy-loop processes on %d CPUs, "+
		"netem on each node's host link: %s, control plane (ferry up: etcd and apiserver) frozen %s every %s; watched until fence-after + 2 s past the load. "+
		"Times in ms; FENCED counts Fenced events on Nodes, NODES REMOVED Node objects seen deleted or recreated, "+
		"UNFED RENEWALS Lease renewals too slow to feed the watchdog, STORM GUARD its FencingPaused events.\n\n",
		o.Duration, o.Busy, runtime.NumCPU(), netem, o.Pause, o.PauseEvery)
	rep := &FalseFencingReport{Results: results, Duration: o.Duration, Busy: o.Busy, CPUs: runtime.NumCPU(), Netem: netem,
		Pause: o.Pause, PauseEvery: o.PauseEvery}
	if err := FalseFencingTable(out, results, defaultProfile); err != nil {
		return rep, err
	}
	for _, r := range results {
		if r.Failure != "" {
			fmt.Fprintf(out, "\n%s: %s\n", r.Profile, r.Failure)
		}
	}
	return rep, runErr
}

// fencingProfiles are the named profiles, fastest first.
var fencingProfiles = []string{string(deckhousev1.ProfileCritical), string(deckhousev1.ProfileFast), string(deckhousev1.ProfileBalanced), string(deckhousev1.ProfileTolerant)}

// falseFencing runs one profile's cluster under load.
type falseFencing struct {
	o         FalseFencingOptions
	bin       string
	say       func(string, ...any)
	waitOther time.Duration
	// netem says what latency was added, or why none; noNetem that netem failed (on an
	// earlier profile too: it is not tried again).
	netem   string
	noNetem bool
}

func (ff *falseFencing) profile(ctx context.Context, res *FalseFencingResult) (retErr error) {
	tag := "[" + res.Profile + "]"
	say := func(format string, args ...any) { ff.say(tag+" "+format, args...) }
	cl, err := bench.OpenCluster(ctx, ff.bin, "", "", "fff-", ff.o.Port, failoverNodes, ff.waitOther, ff.say, "--fencing-profile", res.Profile)
	if err != nil {
		return err
	}
	defer func() { cl.Close(ff.o.Keep || retErr != nil || res.Fenced > 0 || res.Resets > 0, ff.say) }()
	c, err := bench.NewClient(cl.Kubeconfig)
	if err != nil {
		return err
	}
	if res.Timing, err = waitNodesArmed(ctx, c, failoverNodes, 2*time.Minute); err != nil {
		return err
	}
	say("%s", res.Timing)
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return err
	}

	// Where the agents and watchdogs log what they miss: counted from here on.
	logs := map[string]int64{}
	for _, n := range nodes.Items {
		for _, name := range []string{n.Name + ".log", n.Name + "-watchdog.log"} {
			path := filepath.Join(cl.StateDir, "logs", name)
			if fi, err := os.Stat(path); err == nil {
				logs[path] = fi.Size()
			} else {
				logs[path] = 0
			}
		}
	}
	obs := &fencingWatch{c: c, since: time.Now()}
	octx, stopObs := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { obs.run(octx) })
	defer func() { stopObs(); wg.Wait() }()

	// The load, each part undone on the way out whatever happens.
	unload := &cleanups{}
	defer unload.run()
	for _, n := range nodes.Items {
		link, ok := nodeLink(n.Name)
		if !ok {
			continue
		}
		if ff.noNetem {
			break
		}
		if err := addNetem(link, ff.o.Delay, ff.o.Jitter); err != nil {
			ff.netem, ff.noNetem = "none (netem unavailable on this machine)", true
			say("Note: no latency added: %v; the load is the busy CPUs and the frozen control plane only", err)
			break
		}
		ff.netem = fmt.Sprintf("delay %s ± %s", ff.o.Delay, ff.o.Jitter)
		unload.add(func() {
			if err := delQdisc(link); err != nil {
				say("Could not remove the qdisc of %s: %v", link, err)
			}
		})
	}
	busy, err := startBusy(ff.o.Busy)
	unload.add(func() { stopBusy(busy) })
	if err != nil {
		return err
	}
	pid := cl.Up.Cmd.Process.Pid
	fr := startFreezer(pid, ff.o.Pause, ff.o.PauseEvery)
	unload.add(func() { res.Pauses = fr.stop() })
	say("Load on for %s: %d busy loops, netem %s, control plane (pid %d) frozen %s every %s", ff.o.Duration, len(busy), ff.netem, pid, ff.o.Pause, ff.o.PauseEvery)

	start := time.Now()
	err = bench.Sleep(ctx, ff.o.Duration)
	unload.run()
	if err != nil {
		return err
	}
	tail := res.Timing.FenceAfter() + 2*time.Second
	say("Load off after %s (%d pauses); watching %s more", time.Since(start).Round(time.Second), res.Pauses, tail)
	if err := bench.Sleep(ctx, tail); err != nil {
		return err
	}
	res.Observed = time.Since(start)
	stopObs()
	wg.Wait()
	obs.collect(ctx, res)
	for path, off := range logs {
		if strings.HasSuffix(path, "-watchdog.log") {
			res.Resets += countAfter(path, off, "reset the node")
		} else {
			res.Unfed += countAfter(path, off, "Not feeding the watchdog")
		}
	}
	say("%d fenced, %d nodes removed, %d watchdog resets, %d unfed renewals, storm guard %d times; max Lease age %s (%s)",
		res.Fenced, res.Removed, res.Resets, res.Unfed, res.StormPaused, res.MaxLeaseAge.Round(time.Millisecond), bench.OrDash(res.MaxLeaseNode))
	return nil
}

// cleanups runs what undoes the load, last added first, once.
type cleanups struct {
	mu  sync.Mutex
	fns []func()
}

func (c *cleanups) add(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fns = append(c.fns, f)
}

func (c *cleanups) run() {
	c.mu.Lock()
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// nodeLink is the host end of the veth of a `ferry up` node (node-N: fvN), if it exists.
func nodeLink(node string) (string, bool) {
	n, ok := strings.CutPrefix(node, "node-")
	if !ok {
		return "", false
	}
	link := "fv" + n
	if _, err := os.Stat(filepath.Join("/sys/class/net", link)); err != nil {
		return "", false
	}
	return link, true
}

func addNetem(link string, delay, jitter time.Duration) error {
	out, err := exec.Command("tc", "qdisc", "add", "dev", link, "root", "netem", "delay", delay.String(), jitter.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("tc qdisc add dev %s root netem: %w: %s", link, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func delQdisc(link string) error {
	out, err := exec.Command("tc", "qdisc", "del", "dev", link, "root").CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("Cannot find device")) {
		return fmt.Errorf("tc qdisc del dev %s root: %w: %s", link, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startBusy starts n processes that spin a CPU each. They die with the benchmark
// (Pdeathsig) should it be killed before stopBusy.
func startBusy(n int) ([]*exec.Cmd, error) {
	var cmds []*exec.Cmd
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return cmds, fmt.Errorf("starting a busy loop: %w", err)
		}
		cmds = append(cmds, cmd)
	}
	return cmds, nil
}

func stopBusy(cmds []*exec.Cmd) {
	for _, cmd := range cmds {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// freezer stops a process (SIGSTOP) for pause every period, until stop.
type freezer struct {
	quit   chan struct{}
	done   chan struct{}
	pauses int
}

func startFreezer(pid int, pause, every time.Duration) *freezer {
	f := &freezer{quit: make(chan struct{}), done: make(chan struct{})}
	if pause <= 0 {
		close(f.done)
		return f
	}
	go func() {
		defer close(f.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-f.quit:
				return
			case <-t.C:
			}
			if syscall.Kill(pid, syscall.SIGSTOP) != nil {
				return
			}
			select {
			case <-f.quit:
			case <-time.After(pause):
			}
			_ = syscall.Kill(pid, syscall.SIGCONT)
			f.pauses++
		}
	}()
	return f
}

// stop ends the freezing, with the process running, and returns how many pauses it made.
func (f *freezer) stop() int {
	select {
	case <-f.quit:
	default:
		close(f.quit)
	}
	<-f.done
	return f.pauses
}

// fencingWatch polls the Leases and Nodes of a cluster every bench.WatchInterval.
type fencingWatch struct {
	c     client.Client
	since time.Time

	maxAge  time.Duration
	maxNode string
	uids    map[string]types.UID
	removed int
}

func (w *fencingWatch) run(ctx context.Context) {
	w.uids = map[string]types.UID{}
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		// The Leases fencing goes by: the agents' where they renew their own (ferry up's
		// nodes as on a real cluster), else the kubelets'.
		var leases coordinationv1.LeaseList
		err := w.c.List(rctx, &leases, client.InNamespace(v1alpha2.FencingLeaseNamespace))
		if err == nil && len(leases.Items) == 0 {
			err = w.c.List(rctx, &leases, client.InNamespace(corev1.NamespaceNodeLease))
		}
		if err == nil {
			now := time.Now()
			for _, l := range leases.Items {
				if l.Spec.RenewTime == nil {
					continue
				}
				if age := now.Sub(l.Spec.RenewTime.Time); age > w.maxAge {
					w.maxAge, w.maxNode = age, l.Name
				}
			}
		}
		var nodes corev1.NodeList
		if err := w.c.List(rctx, &nodes); err == nil {
			present := map[types.UID]bool{}
			for _, n := range nodes.Items {
				present[n.UID] = true
			}
			for name, uid := range w.uids {
				if !present[uid] {
					w.removed++
					delete(w.uids, name)
				}
			}
			for _, n := range nodes.Items {
				w.uids[n.Name] = n.UID
			}
		}
		cancel()
		_ = bench.Sleep(ctx, bench.WatchInterval)
	}
}

// collect puts what the watch saw, and the fencing events since it began, into res. Call
// it once run has returned.
func (w *fencingWatch) collect(ctx context.Context, res *FalseFencingResult) {
	res.MaxLeaseAge, res.MaxLeaseNode, res.Removed = w.maxAge, w.maxNode, w.removed
	var events corev1.EventList
	if err := w.c.List(ctx, &events); err != nil {
		return
	}
	for _, e := range events.Items {
		if e.CreationTimestamp.Time.Before(w.since.Add(-time.Second)) {
			continue
		}
		n := max(int(e.Count), 1)
		switch {
		case e.InvolvedObject.Kind == "Node" && e.Reason == "Fenced":
			res.Fenced += n
		case e.Reason == v1alpha2.ReasonFencingPaused && e.InvolvedObject.Kind == "NodeGroup":
			res.StormPaused += n
		}
	}
}

// countAfter counts the lines of path past offset off that contain s.
func countAfter(path string, off int64, s string) int {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return 0
	}
	n := 0
	for _, l := range bytes.Split(b[off:], []byte{'\n'}) {
		if bytes.Contains(l, []byte(s)) {
			n++
		}
	}
	return n
}
