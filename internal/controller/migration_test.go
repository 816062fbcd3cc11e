package controller_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestMigrationCompletesWhenTheSourceIsRemovedFirst (found by ferry-bench scale, where a
// simulated migration takes 200 ms): the VM controller removes a source pod that ended as
// Migrated at once; when that happens before the migration controller has looked, the
// operation must still complete (the target's guest runs), not fail with "source pod ended
// during the transfer: the pod is gone".
func TestMigrationCompletesWhenTheSourceIsRemovedFirst(t *testing.T) {
	ns := newNamespace(t)
	for _, n := range []string{"mig-a-" + ns, "mig-b-" + ns} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		if err := k8s.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(ctx, node) })
		node.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi")}
		node.Status.Capacity = node.Status.Allocatable
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		if err := k8s.Status().Update(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	makeImageDisk(t, ns, "d")
	if err := k8s.Create(ctx, newVM(ns, "m", "d", v1alpha2.AlwaysOn)); err != nil {
		t.Fatal(err)
	}
	source := waitPod(t, ns, "m")
	runPod(t, &source, "mig-a-"+ns)
	waitPhase(t, ns, "m", v1alpha2.MachineRunning)

	op := newOp(ns, "ev", "m", v1alpha2.OpEvict)
	if err := k8s.Create(ctx, op); err != nil {
		t.Fatal(err)
	}
	var target corev1.Pod
	eventually(t, timeout, "a migration target pod", func() (bool, string) {
		for _, p := range livePods(t, ns, "m") {
			if _, ok := p.Labels[v1alpha2.LabelMigrationTarget]; ok {
				target = p
				return true, ""
			}
		}
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(op), op)
		return false, fmt.Sprintf("%d live pods; op %s: %s", len(livePods(t, ns, "m")), op.Status.Phase, op.Status.Progress)
	})
	// The target's agent: bound, running, listening; no guest yet.
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: target.Name, Namespace: ns}, Target: corev1.ObjectReference{Kind: "Node", Name: "mig-b-" + ns}}
	if err := k8s.SubResource("binding").Create(ctx, &target, b); err != nil {
		t.Fatal(err)
	}
	setPodStatus(t, &target, corev1.PodRunning, false)
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"`+v1alpha2.AnnotationIncomingURI+`":"tcp:10.0.0.2:4444"}}}`))
	if err := k8s.Patch(ctx, &target, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the source asked to migrate", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(&source), &source); err != nil {
			return false, err.Error()
		}
		return source.Annotations[v1alpha2.AnnotationMigrateTo] != "", "no request"
	})

	// The guest arrives; the source is removed before any status of it said so.
	setPodStatus(t, &target, corev1.PodRunning, true)
	if err := k8s.Delete(ctx, &source, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the operation Completed", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return false, err.Error()
		}
		return op.Status.Phase == v1alpha2.OpCompleted, fmt.Sprintf("%s: %s", op.Status.Phase, op.Status.Progress)
	})
}
