package controller_test

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// nodeTainted tells whether the Node has Ferry's unreachable taint (NoSchedule).
func nodeTainted(t *testing.T, name string) (bool, string) {
	t.Helper()
	var n corev1.Node
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
		return false, err.Error()
	}
	for _, tt := range n.Spec.Taints {
		if tt.Key == v1alpha2.TaintUnreachable {
			return tt.Effect == corev1.TaintEffectNoSchedule, fmt.Sprint(n.Spec.Taints)
		}
	}
	return false, fmt.Sprint(n.Spec.Taints)
}

// TestUnreachableNodeTaintedUntilItRenews: a node that stops renewing its Lease gets
// Ferry's unreachable taint (NoSchedule) as soon as it counts as unreachable, even where
// it is not fenced, keeping the taints it had; when it renews again the taint goes, the
// others stay, and its VM is not moved for it.
func TestUnreachableNodeTaintedUntilItRenews(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	group := ns + "-unfenced"
	newGroup(t, group, false)
	node := newNode(t, ns+"-a", group, armed())
	newNode(t, ns+"-b", group, armed())
	newNode(t, ns+"-c", group, armed())
	var n corev1.Node
	if err := k8s.Get(ctx, client.ObjectKey{Name: node.name}, &n); err != nil {
		t.Fatal(err)
	}
	own := corev1.Taint{Key: "example.com/own", Value: "x", Effect: corev1.TaintEffectPreferNoSchedule}
	n.Spec.Taints = append(n.Spec.Taints, own)
	if err := k8s.Update(ctx, &n); err != nil {
		t.Fatal(err)
	}
	pod := vmOn(t, ns, "vm", "root", node.name)
	node.pause()
	eventually(t, timeout, "node "+node.name+" tainted", func() (bool, string) { return nodeTainted(t, node.name) })
	waitUnreachable(t, ns, "vm", v1alpha2.ReasonNodeUnreachable)
	node.resume()
	eventually(t, timeout, "the taint removed once the node renews", func() (bool, string) {
		tainted, seen := nodeTainted(t, node.name)
		return !tainted, seen
	})
	if err := k8s.Get(ctx, client.ObjectKey{Name: node.name}, &n); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == own.Key && tt.Value == own.Value }) {
		t.Errorf("node taints %v: the node's own taint %v is gone", n.Spec.Taints, own)
	}
	waitReachable(t, ns, "vm")
	if ok, seen := podRuns(&pod); !ok {
		t.Errorf("the VM's pod after its node came back: %s", seen)
	}
	var ops v1alpha2.VirtualMachineOperationList
	if err := k8s.List(ctx, &ops, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(ops.Items) > 0 {
		t.Errorf("%d operations made for the VM of a node that was unreachable for a while, want none", len(ops.Items))
	}
}
