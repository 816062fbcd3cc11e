package controller_test

import (
	"fmt"
	"strings"
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
	op, source, target, node := evictToTarget(t)
	finishMigration(t, op, source, target, node, false)
}

// TestMigrationCompletesWhenTheSourceIsRemovedBeforeTheGuestIsSeen: the source pod goes
// (evicted by a drain once it ended as migrated, say) before the target's guest gave its
// first heartbeat. The operation waits for the target's word and completes; it does not
// fail the migration (which would start the guest again from cold).
func TestMigrationCompletesWhenTheSourceIsRemovedBeforeTheGuestIsSeen(t *testing.T) {
	op, source, target, node := evictToTarget(t)
	finishMigration(t, op, source, target, node, true)
}

// evictToTarget runs a VM on one of two nodes and evicts it; it returns the operation, the
// source pod, the target pod once the controller made it, and the node to bind it to.
func evictToTarget(t *testing.T) (*v1alpha2.VirtualMachineOperation, *corev1.Pod, *corev1.Pod, string) {
	t.Helper()
	ns := newNamespace(t)
	nodeA, nodeB := migrationNodes(t, ns)
	source := runningVM(t, ns, nodeA)
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
		return false, fmt.Sprintf("%d live pods; op %s", len(livePods(t, ns, "m")), opText(op))
	})
	return op, &source, &target, nodeB
}

// finishMigration plays the agents' part in a migration: the target bound to node, running
// and listening; once the source is asked to migrate, the guest arrives and the source is
// removed before any status of it said so. The operation must complete. With sourceFirst
// the source goes before the target's guest is seen (Ready), and the operation is seen
// waiting for it first.
func finishMigration(t *testing.T, op *v1alpha2.VirtualMachineOperation, source, target *corev1.Pod, node string, sourceFirst bool) {
	t.Helper()
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: target.Name, Namespace: target.Namespace}, Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	if err := k8s.SubResource("binding").Create(ctx, target, b); err != nil {
		t.Fatal(err)
	}
	setPodStatus(t, target, corev1.PodRunning, false)
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"`+v1alpha2.AnnotationIncomingURI+`":"tcp:10.0.0.2:4444"}}}`))
	if err := k8s.Patch(ctx, target, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the source asked to migrate", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(source), source); err != nil {
			return false, err.Error()
		}
		return source.Annotations[v1alpha2.AnnotationMigrateTo] != "", "no request"
	})
	if !sourceFirst {
		setPodStatus(t, target, corev1.PodRunning, true)
	}
	if err := k8s.Delete(ctx, source, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	if sourceFirst {
		eventually(t, timeout, "the operation waits for the target's guest", func() (bool, string) {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
				return false, err.Error()
			}
			if op.Status.Phase == v1alpha2.OpFailed {
				t.Fatalf("the operation failed: %s", opText(op))
			}
			reason, msg := op.Outcome()
			return reason == v1alpha2.ReasonSourceSuspended && strings.Contains(msg, "is gone; waiting for the guest's heartbeat"), opText(op)
		})
		setPodStatus(t, target, corev1.PodRunning, true)
	}
	eventually(t, timeout, "the operation Completed", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return false, err.Error()
		}
		return op.Status.Phase == v1alpha2.OpCompleted, opText(op)
	})
}

// migrationNodes makes two Ready nodes for a migration test and returns their names.
func migrationNodes(t *testing.T, ns string) (string, string) {
	t.Helper()
	a, b := "mig-a-"+ns, "mig-b-"+ns
	for _, n := range []string{a, b} {
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
	return a, b
}

// runningVM creates the AlwaysOn VM "m" with its disk, runs its launcher pod on node and
// waits until the VM is Running; it returns that pod.
func runningVM(t *testing.T, ns, node string) corev1.Pod {
	t.Helper()
	makeImageDisk(t, ns, "d")
	if err := k8s.Create(ctx, newVM(ns, "m", "d", v1alpha2.AlwaysOn)); err != nil {
		t.Fatal(err)
	}
	source := waitPod(t, ns, "m")
	runPod(t, &source, node)
	waitPhase(t, ns, "m", v1alpha2.MachineRunning)
	return source
}

// openMigrationState records on the VM a migration from source towards the pod target, as
// the migration controller does when it starts one.
func openMigrationState(t *testing.T, ns, vm string, source *corev1.Pod, target string) {
	t.Helper()
	eventually(t, timeout, "the VM's migration state written", func() (bool, string) {
		var v v1alpha2.VirtualMachine
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: vm}, &v); err != nil {
			return false, err.Error()
		}
		now := metav1.Now()
		v.Status.MigrationState = &v1alpha2.MigrationState{StartTimestamp: &now,
			Source: v1alpha2.MigrationEndpoint{Node: source.Spec.NodeName, Pod: source.Name},
			Target: v1alpha2.MigrationEndpoint{Pod: target}}
		if err := k8s.Status().Update(ctx, &v); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// TestMigrationResumedAfterLostStatus (found by ferry-bench chaos: the controller killed
// during a drain): a controller that died after creating the target pod and recording the
// migration on the VM, but before writing the operation's status, leaves the VM Migrating.
// The next controller must take that migration up, not fail the operation because the VM
// is not Running (which left the VM Migrating for good, and every later Evict failed).
func TestMigrationResumedAfterLostStatus(t *testing.T) {
	ns := newNamespace(t)
	a, b := migrationNodes(t, ns)
	source := runningVM(t, ns, a)

	// What the dead controller left: a target pod of operation "ev" and the VM's state.
	target := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-m-target", Namespace: ns, Labels: map[string]string{},
		OwnerReferences: source.OwnerReferences}}
	for k, v := range source.Labels {
		target.Labels[k] = v
	}
	target.Labels[v1alpha2.LabelMigrationTarget] = "ev"
	target.Spec = *source.Spec.DeepCopy()
	target.Spec.NodeName = ""
	if err := k8s.Create(ctx, &target); err != nil {
		t.Fatal(err)
	}
	openMigrationState(t, ns, "m", &source, target.Name)
	waitPhase(t, ns, "m", v1alpha2.MachineMigrating)

	op := newOp(ns, "ev", "m", v1alpha2.OpEvict)
	if err := k8s.Create(ctx, op); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the operation resumed with the target the dead controller made", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return false, err.Error()
		}
		if op.Status.Phase == v1alpha2.OpFailed {
			t.Fatalf("the operation failed: %s", opText(op))
		}
		ms := op.Status.Migration
		return op.Status.Phase == v1alpha2.OpInProgress && ms != nil && ms.TargetPod == target.Name,
			opText(op)
	})
	// It goes on to the end as any migration.
	finishMigration(t, op, &source, &target, b, false)
	waitPhase(t, ns, "m", v1alpha2.MachineRunning)
}

// TestStaleMigrationStateClosed: a VM whose migration state is open though no operation
// migrates it and its target is gone shows Migrating; an Evict closes that state and
// migrates the VM instead of failing because it is not Running.
func TestStaleMigrationStateClosed(t *testing.T) {
	ns := newNamespace(t)
	a, _ := migrationNodes(t, ns)
	source := runningVM(t, ns, a)
	openMigrationState(t, ns, "m", &source, "virt-launcher-m-gone")
	waitPhase(t, ns, "m", v1alpha2.MachineMigrating)

	op := newOp(ns, "ev2", "m", v1alpha2.OpEvict)
	if err := k8s.Create(ctx, op); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the operation migrating with a target of its own", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return false, err.Error()
		}
		if op.Status.Phase == v1alpha2.OpFailed {
			t.Fatalf("the operation failed: %s", opText(op))
		}
		ms := op.Status.Migration
		return op.Status.Phase == v1alpha2.OpInProgress && ms != nil && ms.TargetPod != "" && ms.TargetPod != "virt-launcher-m-gone",
			opText(op)
	})
}
