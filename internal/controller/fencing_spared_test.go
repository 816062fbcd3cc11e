package controller_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// The cases where fencing holds off: nodes without a watchdog, a storm of unreachable
// nodes, a Lease renewed at the last moment, an agent that says it has no watchdog.

// TestFencingSparesNodesWithoutWatchdog: a node whose group has no fencing, and a node of a
// fencing group whose agent never armed a watchdog, are only reported when they stop
// renewing: their VMs show NodeUnreachable and nothing is ended, long past the time a
// fenced node would have been; once they renew again the condition goes.
func TestFencingSparesNodesWithoutWatchdog(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root-a")
	makeImageDisk(t, ns, "root-b")
	plain, fenced := ns+"-plain", ns+"-fenced"
	newGroup(t, plain, false)
	newGroup(t, fenced, true)
	a := newNode(t, ns+"-a", plain, armed())
	b := newNode(t, ns+"-b", fenced, map[string]string{v1alpha2.AnnotationLeaseInterval: leaseInterval.String()})
	for _, n := range []string{"c", "d", "e"} { // two of five unreachable is not a storm
		newNode(t, ns+"-"+n, fenced, armed())
	}
	podA := vmOn(t, ns, "vm-a", "root-a", a.name)
	podB := vmOn(t, ns, "vm-b", "root-b", b.name)
	waitGroupFencing(t, plain, metav1.ConditionFalse, v1alpha2.ReasonFencingDisabled)

	a.pause()
	last := b.pause()
	waitUnreachable(t, ns, "vm-a", v1alpha2.ReasonNodeUnreachable)
	waitUnreachable(t, ns, "vm-b", v1alpha2.ReasonNodeUnreachable)
	still := func(vm string) func() (bool, string) {
		return func() (bool, string) {
			c := nodeReachable(t, ns, vm)
			return c != nil && c.Reason == v1alpha2.ReasonNodeUnreachable, fmt.Sprintf("VM %s NodeReachable %+v", vm, c)
		}
	}
	holdsFor(t, time.Until(last.Add(2*fenceAfter)), "unfenceable nodes and their pods stay", allHold(a.exists, b.exists,
		func() (bool, string) { return podRuns(&podA) }, func() (bool, string) { return podRuns(&podB) },
		still("vm-a"), still("vm-b")))
	for _, n := range []*fakeNode{a, b} {
		if got := eventReasons(t, "", "Node", n.name); slices.Contains(got, "Fencing") || slices.Contains(got, "Fenced") {
			t.Errorf("events on unfenceable node %s: %v", n.name, got)
		}
	}

	a.resume()
	b.resume()
	waitReachable(t, ns, "vm-a")
	waitReachable(t, ns, "vm-b")
}

// TestFencingStormGuard: when more than 49% of the nodes stop renewing, none is fenced and
// the group says why; once enough renew again, the one still silent is fenced.
func TestFencingStormGuard(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	group := ns + "-fenced"
	newGroup(t, group, true)
	a := newNode(t, ns+"-a", group, armed())
	b := newNode(t, ns+"-b", group, armed())
	newNode(t, ns+"-c", group, armed())
	pod := vmOn(t, ns, "vm", "root", a.name)
	waitGroupFencing(t, group, metav1.ConditionTrue, v1alpha2.ReasonFencingActive)

	a.pause()
	last := b.pause()
	g := waitGroupFencing(t, group, metav1.ConditionFalse, v1alpha2.ReasonTooManyUnreachable)
	eventually(t, timeout, "NodeGroup lists the unreachable nodes", func() (bool, string) {
		g = getGroup(t, group)
		f := g.Status.Fencing
		return g.Status.Nodes == 3 && g.Status.Ready == 1 && f != nil && slices.Equal(f.Unreachable, []string{a.name, b.name}), fmt.Sprintf("%+v", g.Status)
	})
	waitEvent(t, "", "NodeGroup", group, v1alpha2.ReasonFencingPaused)
	waitUnreachable(t, ns, "vm", v1alpha2.ReasonFencingPaused)
	holdsFor(t, time.Until(last.Add(fenceAfter+2*time.Second)), "no node is fenced during a storm",
		allHold(a.exists, b.exists, func() (bool, string) { return podRuns(&pod) }))

	b.resume()
	eventually(t, timeout, "node "+a.name+" fenced once the storm is over", func() (bool, string) {
		ok, seen := a.exists()
		return !ok, seen
	})
	if ok, seen := b.exists(); !ok {
		t.Errorf("the node that renews again: %s", seen)
	}
	checkFencedPod(t, &pod)
	waitGroupFencing(t, group, metav1.ConditionTrue, v1alpha2.ReasonFencingActive)
	waitEvent(t, "", "NodeGroup", group, "FencingResumed")
}

// TestFencingAbortedByLateRenewal: a node that renews its Lease shortly before it would be
// fenced is not fenced, and its VM's NodeReachable condition goes.
func TestFencingAbortedByLateRenewal(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	group := ns + "-fenced"
	newGroup(t, group, true)
	slow := newNode(t, ns+"-a", group, armed())
	newNode(t, ns+"-b", group, armed())
	newNode(t, ns+"-c", group, armed())
	pod := vmOn(t, ns, "vm", "root", slow.name)

	last := slow.pause()
	waitUnreachable(t, ns, "vm", v1alpha2.ReasonFencingPending)
	// Renew 0.7s before the fence time: time enough for the renewal to reach the controller.
	holdsFor(t, time.Until(last.Add(fenceAfter-700*time.Millisecond)), "the node is not fenced early", slow.exists)
	slow.resume()
	waitReachable(t, ns, "vm")
	holdsFor(t, 2*fenceAfter, "a node that renewed in time stays", allHold(slow.exists, func() (bool, string) { return podRuns(&pod) }))
	if got := eventReasons(t, "", "Node", slow.name); slices.Contains(got, "Fencing") {
		t.Errorf("events on node %s: %v", slow.name, got)
	}
}

// TestFencingSparesNodeWhoseAgentHasNoWatchdog: a node whose agent says it has no
// watchdog device (Node condition virtualization.ferryvm.io/fencing False,
// NoWatchdogDevice) is never fenced, even though its Node still shows the armed timing an
// earlier agent left: when it stops renewing, its VM shows NodeUnreachable with the agent's
// reason, an event on the Node says why it is not fenced, and nothing is ended.
func TestFencingSparesNodeWhoseAgentHasNoWatchdog(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	group := ns + "-fenced"
	newGroup(t, group, true)
	a := newNode(t, ns+"-a", group, armed())
	for _, n := range []string{"b", "c"} { // one of three unreachable is not a storm
		newNode(t, ns+"-"+n, group, armed())
	}
	patch := fmt.Sprintf(`{"status":{"conditions":[{"type":%q,"status":"False","reason":%q,"message":"No watchdog device (--watchdog=auto: /dev/watchdog does not exist)"}]}}`,
		v1alpha2.NodeConditionFencing, v1alpha2.ReasonNoWatchdogDevice)
	if err := k8s.Status().Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.name}}, client.RawPatch(types.StrategicMergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	pod := vmOn(t, ns, "vm", "root", a.name)
	waitGroupFencing(t, group, metav1.ConditionTrue, v1alpha2.ReasonFencingActive)

	last := a.pause()
	waitUnreachable(t, ns, "vm", v1alpha2.ReasonNodeUnreachable)
	if c := nodeReachable(t, ns, "vm"); !strings.Contains(c.Message, v1alpha2.ReasonNoWatchdogDevice) {
		t.Errorf("VM's NodeReachable message %q does not say why the node is not fenced (%s)", c.Message, v1alpha2.ReasonNoWatchdogDevice)
	}
	waitEvent(t, "", "Node", a.name, v1alpha2.ReasonNodeUnreachable)
	holdsFor(t, time.Until(last.Add(2*fenceAfter)), "a node without a watchdog and its pod stay", allHold(a.exists,
		func() (bool, string) { return podRuns(&pod) },
		func() (bool, string) {
			c := nodeReachable(t, ns, "vm")
			return c != nil && c.Reason == v1alpha2.ReasonNodeUnreachable, fmt.Sprintf("NodeReachable %+v", c)
		}))
	if got := eventReasons(t, "", "Node", a.name); slices.Contains(got, "Fencing") || slices.Contains(got, "Fenced") {
		t.Errorf("events on node %s without a watchdog: %v", a.name, got)
	}
	a.resume()
	waitReachable(t, ns, "vm")
}
