package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// policyVM is the YAML of a VM (and its disk) with a runPolicy, free to run on any node.
func policyVM(name, policy string) string {
	return strings.Replace(fmt.Sprintf(pinnedVM, name, ""), "\n  cpu:", "\n  runPolicy: "+policy+"\n  cpu:", 1)
}

// instance is one run of a VM's guest, as its own serial output shows it.
type instance struct {
	dir         string
	first, last time.Time // when its first and its latest CNT line were seen
	count       int
}

// guestWatch follows every instance of some VMs through the guests' own output (each
// instance's serial log) and the QEMU processes, to prove a VM never runs twice.
type guestWatch struct {
	vms  []string
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	instances map[string]map[string]*instance // vm → run dir → instance
	twoQEMUs  []string                        // samples that saw two QEMUs of one VM
}

func watchGuests(t *testing.T, vms ...string) *guestWatch {
	w := &guestWatch{vms: vms, stop: make(chan struct{}), done: make(chan struct{}), instances: map[string]map[string]*instance{}}
	for _, vm := range vms {
		w.instances[vm] = map[string]*instance{}
	}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			w.sample()
			select {
			case <-w.stop:
				w.sample()
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.end)
	return w
}

func (w *guestWatch) end() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// sample reads every launcher run directory of the watched VMs and counts the CNT lines
// of its serial log; it also counts each VM's QEMU processes.
func (w *guestWatch) sample() {
	now := time.Now()
	logs, _ := filepath.Glob(filepath.Join(cl.stateDir, "nodes", "*", "pods", "*", "launcher.log"))
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		for _, vm := range w.vms {
			if !strings.Contains(string(b), "VM default/"+vm+": ") {
				continue
			}
			dir := filepath.Dir(l)
			serial, _ := os.ReadFile(filepath.Join(dir, "serial.log"))
			n := len(cntLine.FindAllIndex(serial, -1))
			in := w.instances[vm][dir]
			if in == nil {
				in = &instance{dir: dir}
				w.instances[vm][dir] = in
			}
			if n > in.count {
				if in.count == 0 {
					in.first = now
				}
				in.count, in.last = n, now
			}
		}
	}
	for _, vm := range w.vms {
		if q := qemuProcesses(vmQEMUMarker(vm)); len(q) > 1 {
			w.twoQEMUs = append(w.twoQEMUs, fmt.Sprintf("%s at %s: %d QEMUs", vm, now.Format("15:04:05.000"), len(q)))
		}
	}
}

// assertNeverTwice fails unless, for every VM, each instance's guest fell silent before the
// next one printed its first heartbeat, and no two QEMUs of a VM ever ran at once. It
// returns the VM's instances in order.
func (w *guestWatch) assertNeverTwice(t *testing.T, vm string) []instance {
	t.Helper()
	w.end()
	w.mu.Lock()
	defer w.mu.Unlock()
	var runs []instance
	for _, in := range w.instances[vm] {
		if in.count > 0 {
			runs = append(runs, *in)
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].first.Before(runs[j].first) })
	for i := 1; i < len(runs); i++ {
		if !runs[i-1].last.Before(runs[i].first) {
			t.Errorf("VM %s ran twice: instance in %s counted until %s, instance in %s began at %s",
				vm, runs[i-1].dir, runs[i-1].last.Format("15:04:05.000"), runs[i].dir, runs[i].first.Format("15:04:05.000"))
		}
	}
	for _, s := range w.twoQEMUs {
		if strings.HasPrefix(s, vm+" ") {
			t.Errorf("two QEMUs: %s", s)
		}
	}
	return runs
}

// createOn creates VMs with runPolicy policy (the default if "") and waits until they all
// run on node (the other nodes are cordoned meanwhile). VMs with a policy are deleted when
// the test ends.
func createOn(t *testing.T, node, policy string, names ...string) {
	t.Helper()
	var others []string
	for i := 1; i <= cl.nodes; i++ {
		if n := fmt.Sprintf("node-%d", i); n != node {
			others = append(others, n)
		}
	}
	mustFerry(t, append([]string{"k", "cordon"}, others...)...)
	defer mustFerry(t, append([]string{"k", "uncordon"}, others...)...)
	for _, n := range names {
		if policy == "" {
			apply(t, fmt.Sprintf(pinnedVM, n, ""))
			continue
		}
		apply(t, policyVM(n, policy))
		t.Cleanup(func() { deleteVM(t, n) })
	}
	for _, n := range names {
		if policy == string(v1alpha2.Manual) {
			mustFerry(t, "v", "start", n)
		}
		if got := waitRunning(t, n, 2*time.Minute).Status.NodeName; got != node {
			t.Fatalf("%s started on %s, want %s", n, got, node)
		}
	}
}

// nodeReady tells whether a node is registered and Ready.
func nodeReady(t *testing.T, name string) (bool, string) {
	var n corev1.Node
	if err := cl.c.Get(t.Context(), client.ObjectKey{Name: name}, &n); err != nil {
		return false, err.Error()
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, string(c.Status)
		}
	}
	return false, "no Ready condition"
}

// nodeEvents returns the reasons of the events recorded on a node.
func nodeEvents(t *testing.T, node string) []string {
	var list corev1.EventList
	if err := cl.c.List(t.Context(), &list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "Node" && e.InvolvedObject.Name == node {
			out = append(out, e.Reason)
		}
	}
	return out
}

// failover runs one fault on the node of a fresh AlwaysOn VM (and of a Manual one beside
// it) and checks ColdStandby: the node is fenced, the AlwaysOn VM's guest counts again on
// another node with the same address, the Manual VM stays off and says why, no VM ever runs
// twice, and the node rejoins after restore without running any old VM.
func failover(t *testing.T, fault, restore, node string) {
	vm, manual := "fo-"+fault, "fo-"+fault+"-manual"
	createOn(t, node, string(v1alpha2.AlwaysOn), vm)
	createOn(t, node, string(v1alpha2.Manual), manual)
	w := watchGuests(t, vm, manual)
	before := getVM(t, vm)
	last := waitHeartbeat(t, vm, 0, time.Minute)
	waitHeartbeat(t, manual, 0, time.Minute)

	mustFerry(t, "node", fault, node)
	restored := false
	doRestore := func() {
		if !restored {
			restored = true
			// A frozen agent was killed by its watchdog: there may be nothing to thaw.
			if out, err := ferry(t, "node", restore, node); err != nil {
				t.Logf("ferry node %s %s: %v: %s", restore, node, err, out)
			}
		}
	}
	t.Cleanup(doRestore)
	t0 := time.Now()

	eventually(t, 40*time.Second, "VM marked on an unreachable node", func() (bool, string) {
		vm := getVM(t, vm)
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionNodeReachable)
		// The fencing may be over by the time we look.
		return (c != nil && c.Reason == v1alpha2.ReasonFencingPending) || vm.Status.NodeName != node, fmt.Sprintf("%+v on %s", c, vm.Status.NodeName)
	})
	eventually(t, time.Minute, "node "+node+" fenced", func() (bool, string) {
		var n corev1.Node
		err := cl.c.Get(t.Context(), client.ObjectKey{Name: node}, &n)
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		// A rejoined node is a new object: its creation follows the fault.
		return err == nil && n.CreationTimestamp.After(t0), fmt.Sprintf("node %s created %s", node, n.CreationTimestamp)
	})
	fencedAfter := time.Since(t0)
	var after *v1alpha2.VirtualMachine
	eventually(t, 2*time.Minute, "VM "+vm+" Running on another node", func() (bool, string) {
		after = getVM(t, vm)
		return after.Status.Phase == v1alpha2.MachineRunning && after.Status.NodeName != node,
			fmt.Sprintf("%s on %s", after.Status.Phase, after.Status.NodeName)
	})
	if after.Status.IPAddress != before.Status.IPAddress {
		t.Errorf("address changed: %s → %s", before.Status.IPAddress, after.Status.IPAddress)
	}
	// A new boot: the counter starts again, and the address answers from its new node.
	waitHeartbeat(t, vm, 0, time.Minute)
	waitAnswers(t, after.Status.IPAddress, 30*time.Second)
	t.Logf("%s of %s: fenced after %s, %s counting on %s %s after the fault (last count before: %d)",
		fault, node, fencedAfter.Round(100*time.Millisecond), vm, after.Status.NodeName, time.Since(t0).Round(100*time.Millisecond), last)
	for _, want := range []string{"Fencing", "Fenced"} {
		if !contains(nodeEvents(t, node), want) {
			t.Errorf("no %s event on node %s: %v", want, node, nodeEvents(t, node))
		}
	}

	// The Manual VM stays off and says why.
	eventually(t, 30*time.Second, "Manual VM stopped by the fencing", func() (bool, string) {
		m := getVM(t, manual)
		c := meta.FindStatusCondition(m.Status.Conditions, v1alpha2.VMConditionRunning)
		return m.Status.Phase == v1alpha2.MachineStopped && c != nil && c.Reason == v1alpha2.ReasonNodeFenced, fmt.Sprintf("%s %+v", m.Status.Phase, c)
	})
	if q := qemuProcesses(vmQEMUMarker(manual)); len(q) > 0 {
		t.Errorf("Manual VM runs after its node was fenced: %v", q)
	}

	// The node comes back, takes part again, and runs none of its old VMs.
	doRestore()
	eventually(t, 90*time.Second, "node "+node+" Ready again", func() (bool, string) { return nodeReady(t, node) })
	if fault != "poweroff" {
		// Its watchdog, not a power cut, stopped the node: the node says so when it is back.
		eventually(t, time.Minute, "NodeReset event on "+node, func() (bool, string) {
			ev := nodeEvents(t, node)
			return contains(ev, "NodeReset"), fmt.Sprint(ev)
		})
	}
	for _, name := range []string{vm, manual} {
		for _, q := range qemuProcesses(vmQEMUMarker(name)) {
			if strings.Contains(q, "/nodes/"+node+"/") {
				t.Errorf("node %s runs old VM %s again: %s", node, name, q)
			}
		}
	}
	if got := getVM(t, vm).Status.NodeName; got != after.Status.NodeName {
		t.Errorf("VM %s moved from %s to %s after node %s rejoined", vm, after.Status.NodeName, got, node)
	}
	runs := w.assertNeverTwice(t, vm)
	w.assertNeverTwice(t, manual)
	if len(runs) != 2 {
		t.Errorf("VM %s had %d instances with a heartbeat, want 2 (before and after the fault)", vm, len(runs))
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestFailoverPowerLoss: the node's whole process tree is killed (power loss).
func TestFailoverPowerLoss(t *testing.T) { failover(t, "poweroff", "poweron", "node-1") }

// TestFailoverNetworkLoss: the node is cut off the network; its watchdog kills its VMs.
func TestFailoverNetworkLoss(t *testing.T) { failover(t, "disconnect", "connect", "node-2") }

// TestFailoverFrozenAgent: the node's agent is stopped (SIGSTOP) while its VMs run on; its
// watchdog, which the agent no longer feeds, kills them.
func TestFailoverFrozenAgent(t *testing.T) { failover(t, "freeze", "thaw", "node-3") }

// TestNoFencingNoRestart: a node of a NodeGroup without fencing is cut off: Ferry cannot
// know that its VM stopped, so it does not start it elsewhere; the VM says so, and runs on
// when the node is back.
func TestNoFencingNoRestart(t *testing.T) {
	const node, vm = "node-2", "nofence"
	apply(t, `
apiVersion: deckhouse.io/v1
kind: NodeGroup
metadata:
  name: unfenced
spec:
  nodeType: Static
`)
	mustFerry(t, "k", "label", "node", node, "node.deckhouse.io/group=unfenced", "--overwrite")
	t.Cleanup(func() {
		mustFerry(t, "k", "label", "node", node, "node.deckhouse.io/group=worker", "--overwrite")
		mustFerry(t, "k", "delete", "nodegroup", "unfenced")
		eventually(t, 30*time.Second, "watchdog armed again on "+node, func() (bool, string) { return watchdogArmed(t, node) })
	})
	eventually(t, 30*time.Second, "watchdog disarmed on "+node, func() (bool, string) {
		armed, s := watchdogArmed(t, node)
		return !armed, s
	})
	createOn(t, node, string(v1alpha2.AlwaysOn), vm)
	pod := activePod(t, vm)
	last := waitHeartbeat(t, vm, 0, time.Minute)

	mustFerry(t, "node", "disconnect", node)
	connected := false
	t.Cleanup(func() {
		if !connected {
			mustFerry(t, "node", "connect", node)
		}
	})
	eventually(t, 40*time.Second, "VM marked on an unreachable node", func() (bool, string) {
		c := meta.FindStatusCondition(getVM(t, vm).Status.Conditions, v1alpha2.VMConditionNodeReachable)
		return c != nil && c.Status == "False" && c.Reason == v1alpha2.ReasonNodeUnreachable, fmt.Sprintf("%+v", c)
	})
	// Well past the time a fenced node would be (7 s): nothing may have moved.
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		got := getVM(t, vm)
		if got.Status.NodeName != node || activePod(t, vm) != pod {
			t.Fatalf("VM %s restarted elsewhere (node %s, pod %s) though its node has no fencing", vm, got.Status.NodeName, activePod(t, vm))
		}
		if ok, _ := nodeExists(t, node); !ok {
			t.Fatalf("node %s was removed though it has no fencing", node)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if q := qemuProcesses(vmQEMUMarker(vm)); len(q) != 1 {
		t.Fatalf("want the VM's one QEMU still running cut off, found %d", len(q))
	}

	mustFerry(t, "node", "connect", node)
	connected = true
	eventually(t, 30*time.Second, "NodeReachable condition cleared", func() (bool, string) {
		c := meta.FindStatusCondition(getVM(t, vm).Status.Conditions, v1alpha2.VMConditionNodeReachable)
		return c == nil, fmt.Sprintf("%+v", c)
	})
	// The same guest counts on: it never stopped.
	if n := waitHeartbeat(t, vm, last, time.Minute); n <= last {
		t.Errorf("guest counter %d did not go past %d", n, last)
	}
	if activePod(t, vm) != pod {
		t.Errorf("VM %s was restarted", vm)
	}
}

func watchdogArmed(t *testing.T, node string) (bool, string) {
	var n corev1.Node
	// Also called from cleanups, when t.Context() is already cancelled.
	if err := cl.c.Get(context.Background(), client.ObjectKey{Name: node}, &n); err != nil {
		return false, err.Error()
	}
	v, ok := n.Annotations[v1alpha2.AnnotationWatchdogTimeout]
	return ok, "watchdog-timeout=" + v
}

func nodeExists(t *testing.T, node string) (bool, error) {
	var n corev1.Node
	err := cl.c.Get(t.Context(), client.ObjectKey{Name: node}, &n)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// TestNodeGroupFencingValidation: a fencing setting that cannot be right is refused with a
// message that says what to fix.
func TestNodeGroupFencingValidation(t *testing.T) {
	for _, tc := range []struct{ watchdog, want string }{
		{"{timeout: 5s, profile: Fast}", "set either watchdog.timeout or watchdog.profile, not both"},
		{"{timeout: 500ms}", "watchdog.timeout must be between 1s and 10m"},
		{"{profile: Turbo}", `Unsupported value: "Turbo"`},
	} {
		out, err := applyErr(t, `
apiVersion: deckhouse.io/v1
kind: NodeGroup
metadata:
  name: invalid-fencing
spec:
  fencing:
    mode: Watchdog
    watchdog: `+tc.watchdog+`
`)
		if err == nil {
			mustFerry(t, "k", "delete", "nodegroup", "invalid-fencing")
			t.Errorf("watchdog %s was accepted", tc.watchdog)
			continue
		}
		if !strings.Contains(out, tc.want) {
			t.Errorf("watchdog %s: refused with %q, want it to say %q", tc.watchdog, out, tc.want)
		}
	}
}

// TestControlPlaneOutageKeepsVMs: the control plane (etcd and apiserver, in `ferry up`'s own
// process) freezes for longer than the watchdog timeout. Every node's Lease renewals fail,
// but the agents learn from each other that the control plane is down for all of them, so
// they keep feeding their watchdogs: no node resets, none is fenced, the guest counts on.
func TestControlPlaneOutageKeepsVMs(t *testing.T) {
	const vm = "outage"
	createOn(t, "node-1", string(v1alpha2.AlwaysOn), vm)
	pod := activePod(t, vm)
	last := waitHeartbeat(t, vm, 0, time.Minute)
	var nodes corev1.NodeList
	if err := cl.c.List(t.Context(), &nodes); err != nil {
		t.Fatal(err)
	}
	created := map[string]time.Time{}
	for _, n := range nodes.Items {
		created[n.Name] = n.CreationTimestamp.Time
	}

	watchdogLog := func(i int) string {
		b, _ := os.ReadFile(filepath.Join(cl.stateDir, "logs", fmt.Sprintf("node-%d-watchdog.log", i)))
		return string(b)
	}
	logged := map[int]int{}
	for i := 1; i <= cl.nodes; i++ {
		logged[i] = len(watchdogLog(i))
	}

	// 9 s: longer than the Fast watchdog (5 s) and its fencing time (7 s).
	pid := cl.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	outage := time.Now()
	for time.Since(outage) < 9*time.Second {
		if q := qemuProcesses(vmQEMUMarker(vm)); len(q) != 1 {
			thaw()
			t.Fatalf("the VM's QEMU is gone during the control-plane outage (%d running)", len(q))
		}
		time.Sleep(250 * time.Millisecond)
	}
	thaw()

	// Back: the same instance counts on, on the same pod, and no node was replaced.
	if n := waitHeartbeat(t, vm, last+5, time.Minute); n <= last {
		t.Fatalf("guest counter %d", n)
	}
	if got := activePod(t, vm); got != pod {
		t.Errorf("VM restarted during the outage: pod %s → %s", pod, got)
	}
	for name, at := range created {
		var n corev1.Node
		if err := cl.c.Get(t.Context(), client.ObjectKey{Name: name}, &n); err != nil {
			t.Errorf("node %s: %v", name, err)
		} else if !n.CreationTimestamp.Time.Equal(at) {
			t.Errorf("node %s was fenced and rejoined during the outage", name)
		}
	}
	for i := 1; i <= cl.nodes; i++ {
		if l := watchdogLog(i); len(l) >= logged[i] && strings.Contains(l[logged[i]:], "expired") {
			t.Errorf("the watchdog of node-%d fired during the outage: %s", i, l[logged[i]:])
		}
	}
}
