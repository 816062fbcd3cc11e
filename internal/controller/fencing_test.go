package controller_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// The fake nodes' agents armed a 2s watchdog and renew their Lease every 500ms: a node
// counts as unreachable 1.25s after its last renewal and is fenced 3s after it (2s plus a
// margin of two intervals). A 1s watchdog would leave its VMs only 0.75s in FencingPending,
// too short to observe reliably on a loaded machine under -race.
const (
	armedTimeout  = 2 * time.Second
	leaseInterval = 500 * time.Millisecond
	fenceAfter    = 3 * time.Second
	renewEvery    = 300 * time.Millisecond
	// testFinalizer keeps a fenced launcher pod in place after the VM controller removes
	// it, so that the test can read what fencing made of it.
	testFinalizer = "test.ferryvm.io/keep"
)

// armed are the annotations of a node whose agent armed its watchdog.
func armed() map[string]string {
	return map[string]string{
		v1alpha2.AnnotationWatchdogTimeout: armedTimeout.String(),
		v1alpha2.AnnotationLeaseInterval:   leaseInterval.String(),
	}
}

// fakeNode is a Node whose agent the test plays: it renews the node's Lease every
// renewEvery while renewing.
type fakeNode struct {
	t         *testing.T
	name      string
	namespace string // of the Lease

	mu       sync.Mutex
	renewing bool
	last     time.Time // the renew time last written
}

// newNode creates a Node in group with annotations ann and its Lease, renewed until the
// test ends or pause; the test's end removes both.
func newNode(t *testing.T, name, group string, ann map[string]string) *fakeNode {
	t.Helper()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: corev1.NamespaceNodeLease}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{deckhousev1.LabelNodeGroup: group}, Annotations: ann}}
	if err := k8s.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k8s.Delete(ctx, node); client.IgnoreNotFound(err) != nil {
			t.Error(err)
		}
	})
	return renewedLease(t, corev1.NamespaceNodeLease, name)
}

// agentLease is a second Lease of node n, in ferry-node-lease, as an agent that leaves the
// kubelet's part to a real kubelet renews it; renewed like newNode's.
func (n *fakeNode) agentLease() *fakeNode {
	n.t.Helper()
	if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: v1alpha2.FencingLeaseNamespace}}); client.IgnoreAlreadyExists(err) != nil {
		n.t.Fatal(err)
	}
	return renewedLease(n.t, v1alpha2.FencingLeaseNamespace, n.name)
}

// renewedLease creates a Lease and renews it every renewEvery until the test ends (or
// pause); the test's end removes it.
func renewedLease(t *testing.T, namespace, name string) *fakeNode {
	t.Helper()
	n := &fakeNode{t: t, name: name, namespace: namespace, renewing: true, last: time.Now()}
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To(int32(1)),
			RenewTime: &metav1.MicroTime{Time: n.last}},
	}
	if err := k8s.Create(ctx, lease); err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(renewEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				n.mu.Lock()
				if n.renewing {
					n.renewLocked()
				}
				n.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		if err := k8s.Delete(ctx, lease); client.IgnoreNotFound(err) != nil {
			t.Error(err)
		}
	})
	return n
}

func (n *fakeNode) renewLocked() {
	now := time.Now()
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"renewTime": metav1.NewMicroTime(now)}})
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: n.name, Namespace: n.namespace}}
	if err := k8s.Patch(ctx, lease, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if apierrors.IsNotFound(err) {
			return // removed by fencing
		}
		n.t.Errorf("renewing the Lease %s/%s: %v", n.namespace, n.name, err)
		return
	}
	n.last = now
}

// pause stops renewing the Lease and returns the renew time last written: no renewal
// follows once it returns.
func (n *fakeNode) pause() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.renewing = false
	return n.last
}

// resume renews the Lease at once and then every renewEvery.
func (n *fakeNode) resume() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.renewing = true
	n.renewLocked()
}

func (n *fakeNode) exists() (bool, string) {
	err := k8s.Get(ctx, client.ObjectKey{Name: n.name}, &corev1.Node{})
	return err == nil, fmt.Sprintf("node %s: %v", n.name, err)
}

// newGroup creates a NodeGroup, with fencing by a 2s watchdog or without fencing.
func newGroup(t *testing.T, name string, withFencing bool) {
	t.Helper()
	g := &deckhousev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if withFencing {
		g.Spec.Fencing = &deckhousev1.FencingSpec{Mode: deckhousev1.FencingWatchdog,
			Watchdog: &deckhousev1.WatchdogSpec{Timeout: &metav1.Duration{Duration: armedTimeout}}}
	}
	if err := k8s.Create(ctx, g); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := k8s.Delete(ctx, g); client.IgnoreNotFound(err) != nil {
			t.Error(err)
		}
	})
}

func getGroup(t *testing.T, name string) *deckhousev1.NodeGroup {
	t.Helper()
	g := &deckhousev1.NodeGroup{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, g); err != nil {
		t.Fatal(err)
	}
	return g
}

// waitGroupFencing waits for the group's Fencing condition to have status and reason.
func waitGroupFencing(t *testing.T, name string, status metav1.ConditionStatus, reason string) *deckhousev1.NodeGroup {
	t.Helper()
	var g *deckhousev1.NodeGroup
	eventually(t, timeout, fmt.Sprintf("NodeGroup %s Fencing %s/%s", name, status, reason), func() (bool, string) {
		g = getGroup(t, name)
		c := meta.FindStatusCondition(g.Status.Conditions, v1alpha2.NodeGroupConditionFencing)
		return c != nil && c.Status == status && c.Reason == reason, fmt.Sprintf("%+v", g.Status)
	})
	return g
}

// vmOn creates an AlwaysOn VM and plays the scheduler and the kubelet: its launcher pod
// runs on node. The pod holds testFinalizer. The test's end deletes the VM and its pods.
func vmOn(t *testing.T, ns, name, disk, node string) corev1.Pod {
	t.Helper()
	if err := k8s.Create(ctx, newVM(ns, name, disk, v1alpha2.AlwaysOn)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteVM(t, ns, name) })
	pod := waitPod(t, ns, name)
	patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":["`+testFinalizer+`"]}}`))
	if err := k8s.Patch(ctx, &pod, patch); err != nil {
		t.Fatal(err)
	}
	runPod(t, &pod, node)
	waitPhase(t, ns, name, v1alpha2.MachineRunning)
	return pod
}

// deleteVM deletes a VM and plays the kubelet for its pods, which no kubelet runs.
func deleteVM(t *testing.T, ns, name string) {
	t.Helper()
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := k8s.Delete(ctx, vm); client.IgnoreNotFound(err) != nil {
		t.Error(err)
		return
	}
	eventually(t, timeout, "VM "+name+" deleted", func() (bool, string) {
		var pods corev1.PodList
		if err := k8s.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha2.LabelVMName: name}); err != nil {
			return false, err.Error()
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if len(p.Finalizers) > 0 {
				release(t, p)
			}
			_ = k8s.Delete(ctx, p, client.GracePeriodSeconds(0))
		}
		err := k8s.Get(ctx, client.ObjectKeyFromObject(vm), &v1alpha2.VirtualMachine{})
		return apierrors.IsNotFound(err), fmt.Sprintf("%d pods; %v", len(pods.Items), err)
	})
}

func nodeReachable(t *testing.T, ns, vm string) *metav1.Condition {
	t.Helper()
	return meta.FindStatusCondition(getVM(t, ns, vm).Status.Conditions, v1alpha2.VMConditionNodeReachable)
}

// waitUnreachable waits for the VM's NodeReachable condition to be False with reason.
func waitUnreachable(t *testing.T, ns, vm, reason string) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("VM %s NodeReachable=False %s", vm, reason), func() (bool, string) {
		c := nodeReachable(t, ns, vm)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == reason, fmt.Sprintf("%+v", c)
	})
}

func waitReachable(t *testing.T, ns, vm string) {
	t.Helper()
	eventually(t, timeout, "VM "+vm+" without a NodeReachable condition", func() (bool, string) {
		c := nodeReachable(t, ns, vm)
		return c == nil, fmt.Sprintf("%+v", c)
	})
}

// podRuns tells whether the pod is still there, Running and not being deleted.
func podRuns(pod *corev1.Pod) (bool, string) {
	var p corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), &p); err != nil {
		return false, err.Error()
	}
	return p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil, fmt.Sprintf("pod %s %s (%s), deleted at %v", p.Name, p.Status.Phase, p.Status.Reason, p.DeletionTimestamp)
}

// checkFencedPod checks that fencing ended the pod as its node's failure would, then
// lets it go: the VM starts again only once its old pod is gone.
func checkFencedPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	defer release(t, pod)
	var p corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), &p); err != nil {
		t.Fatalf("launcher pod of the fenced node: %v", err)
	}
	if p.Status.Phase != corev1.PodFailed || p.Status.Reason != v1alpha2.ReasonNodeFenced {
		t.Errorf("pod %s is %s with reason %q, want Failed with reason %s", p.Name, p.Status.Phase, p.Status.Reason, v1alpha2.ReasonNodeFenced)
	}
	if len(p.Status.ContainerStatuses) == 0 {
		t.Errorf("pod %s has no container status", p.Name)
	}
	for _, cs := range p.Status.ContainerStatuses {
		if term := cs.State.Terminated; term == nil || term.Reason != v1alpha2.ReasonNodeFenced {
			t.Errorf("container %s state %+v, want terminated with reason %s", cs.Name, cs.State, v1alpha2.ReasonNodeFenced)
		}
	}
}

// release removes testFinalizer from the pod.
func release(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if err := k8s.Patch(ctx, pod, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))); client.IgnoreNotFound(err) != nil {
		t.Error(err)
	}
}

// eventReasons are the reasons of the events about kind/name (in any namespace when ns is "").
func eventReasons(t *testing.T, ns, kind, name string) []string {
	t.Helper()
	var list corev1.EventList
	if err := k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{"involvedObject.kind": kind, "involvedObject.name": name}); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Reason)
	}
	return out
}

func waitEvent(t *testing.T, ns, kind, name, reason string) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("event %s on %s %s", reason, kind, name), func() (bool, string) {
		got := eventReasons(t, ns, kind, name)
		return slices.Contains(got, reason), fmt.Sprint(got)
	})
}

// holdsFor checks that cond keeps holding for d: the bounded observation that something
// does not happen.
func holdsFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if ok, seen := cond(); !ok {
			t.Fatalf("%s: stopped after %s of %s: %s", what, time.Since(start).Round(time.Millisecond), d, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// allHold is the conjunction of conditions.
func allHold(conds ...func() (bool, string)) func() (bool, string) {
	return func() (bool, string) {
		for _, c := range conds {
			if ok, seen := c(); !ok {
				return false, seen
			}
		}
		return true, ""
	}
}

// TestFencingRestartsVMOfFailedNode: a node that keeps renewing its Lease is left alone;
// once it stops, its VM first shows FencingPending, then, no earlier than the watchdog
// timeout plus margin after the last renewal, the node is fenced (pod Failed NodeFenced,
// Lease and Node gone, events on the node) and the VM starts again on another node.
func TestFencingRestartsVMOfFailedNode(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	group := ns + "-fenced"
	newGroup(t, group, true)
	failing := newNode(t, ns+"-a", group, armed())
	other := newNode(t, ns+"-b", group, armed())
	newNode(t, ns+"-c", group, armed()) // three nodes: one failed node is not a storm
	pod := vmOn(t, ns, "vm", "root", failing.name)

	g := waitGroupFencing(t, group, metav1.ConditionTrue, v1alpha2.ReasonFencingActive)
	eventually(t, timeout, "NodeGroup counts its nodes", func() (bool, string) {
		g = getGroup(t, group)
		return g.Status.Nodes == 3 && g.Status.Ready == 3, fmt.Sprintf("%+v", g.Status)
	})
	if f := g.Status.Fencing; f == nil || f.Timeout.Duration != armedTimeout || f.LeaseInterval.Duration != leaseInterval || f.FenceAfter.Duration != fenceAfter {
		t.Errorf("NodeGroup fencing status %+v, want timeout %s, interval %s, fenced after %s", f, armedTimeout, leaseInterval, fenceAfter)
	}

	holdsFor(t, 2*fenceAfter, "a renewing node is left alone", allHold(failing.exists, func() (bool, string) { return podRuns(&pod) },
		func() (bool, string) {
			c := nodeReachable(t, ns, "vm")
			return c == nil, fmt.Sprintf("NodeReachable %+v", c)
		}))

	last := failing.pause()
	waitUnreachable(t, ns, "vm", v1alpha2.ReasonFencingPending)
	// While it waits to be fenced, no new pod is placed on it.
	eventually(t, timeout, "node "+failing.name+" tainted "+v1alpha2.TaintUnreachable, func() (bool, string) {
		return nodeTainted(t, failing.name)
	})
	// The controller counts from when it saw the renewal, never earlier than it was written:
	// the node must survive until then (less the time a read may take).
	holdsFor(t, time.Until(last.Add(fenceAfter-300*time.Millisecond)), "the node is not fenced before its watchdog has surely fired", failing.exists)
	eventually(t, timeout, "node "+failing.name+" removed", func() (bool, string) {
		ok, seen := failing.exists()
		return !ok, seen
	})
	err := k8s.Get(ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: failing.name}, &coordinationv1.Lease{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("Lease of the fenced node: %v, want it removed", err)
	}
	checkFencedPod(t, &pod)
	waitEvent(t, "", "Node", failing.name, "Fencing")
	waitEvent(t, "", "Node", failing.name, "Fenced")

	// The VM starts again; the test plays the scheduler and puts it on the other node.
	var next corev1.Pod
	eventually(t, timeout, "a new launcher pod", func() (bool, string) {
		pods := livePods(t, ns, "vm")
		if len(pods) == 1 && pods[0].Name != pod.Name {
			next = pods[0]
			return true, ""
		}
		return false, fmt.Sprintf("%d live pods", len(pods))
	})
	runPod(t, &next, other.name)
	if vm := waitPhase(t, ns, "vm", v1alpha2.MachineRunning); vm.Status.NodeName != other.name {
		t.Errorf("VM runs on %q, want %s", vm.Status.NodeName, other.name)
	}
	waitReachable(t, ns, "vm")
	waitEvent(t, ns, "VirtualMachine", "vm", v1alpha2.ReasonNodeFenced)
}

// TestFencingGoesByTheAgentsLease: where a node's agent renews a Lease of its own beside
// the kubelet's (a real cluster), fencing goes by the agent's, which its watchdog is fed
// after: a node whose agent stopped is fenced though its kubelet renews on, and a node
// whose kubelet stopped but whose agent renews is left alone.
func TestFencingGoesByTheAgentsLease(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	group := ns + "-fenced"
	newGroup(t, group, true)
	a := newNode(t, ns+"-a", group, armed())
	agentA := a.agentLease()
	b := newNode(t, ns+"-b", group, armed())
	b.agentLease()
	for _, n := range []string{"c", "d", "e"} { // two of five unreachable is not a storm
		newNode(t, ns+"-"+n, group, armed()).agentLease()
	}
	pod := vmOn(t, ns, "vm", "root", b.name)
	waitGroupFencing(t, group, metav1.ConditionTrue, v1alpha2.ReasonFencingActive)

	// b's kubelet stops; its agent renews (and feeds the watchdog): its VM runs on.
	b.pause()
	holdsFor(t, 2*fenceAfter, "a node whose agent renews is not fenced, whatever its kubelet's Lease", allHold(b.exists,
		func() (bool, string) { return podRuns(&pod) },
		func() (bool, string) {
			c := nodeReachable(t, ns, "vm")
			return c == nil, fmt.Sprintf("NodeReachable %+v", c)
		}))

	// a's agent stops (its watchdog fires); its kubelet renews on: a is fenced.
	last := agentA.pause()
	holdsFor(t, time.Until(last.Add(fenceAfter-300*time.Millisecond)), "the node is not fenced before its watchdog has surely fired", a.exists)
	eventually(t, timeout, "node "+a.name+" fenced", func() (bool, string) {
		ok, seen := a.exists()
		return !ok, seen
	})
	waitEvent(t, "", "Node", a.name, "Fenced")
	err := k8s.Get(ctx, client.ObjectKey{Namespace: v1alpha2.FencingLeaseNamespace, Name: a.name}, &coordinationv1.Lease{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("the agent's Lease of the fenced node: %v, want it removed", err)
	}
}
