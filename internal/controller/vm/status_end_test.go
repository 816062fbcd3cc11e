package vm

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// While the ended pod of a VM that stays off is being removed, the VM keeps saying why it
// stopped; a pod shut down from running says it is shutting down.
func TestRemovedEndedPodKeepsWhy(t *testing.T) {
	now := metav1.Now()
	pod := func(phase corev1.PodPhase, reason string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-vm-x", DeletionTimestamp: &now},
			Status: corev1.PodStatus{Phase: phase, Reason: reason}}
	}
	for _, tc := range []struct {
		name       string
		terminated *corev1.Pod
		want       string
	}{
		{"fenced", pod(corev1.PodFailed, v1alpha2.ReasonNodeFenced), v1alpha2.ReasonNodeFenced},
		{"shutting down", pod(corev1.PodRunning, ""), v1alpha2.ReasonPodNotRunning},
	} {
		vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm", Generation: 2},
			Spec: v1alpha2.VirtualMachineSpec{RunPolicy: v1alpha2.Manual}}
		meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{Type: v1alpha2.VMConditionRunning, Status: metav1.ConditionFalse,
			Reason: v1alpha2.ReasonNodeFenced, Message: "node node-1 was fenced"})
		s := &scope{vm: vm, terminating: []*corev1.Pod{tc.terminated}}
		r := &Reconciler{}
		r.deriveStatus(s)
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionRunning)
		if vm.Status.Phase != v1alpha2.MachineStopping || c == nil || c.Reason != tc.want {
			t.Errorf("%s: phase %s, Running %+v; want Stopping, reason %s", tc.name, vm.Status.Phase, c, tc.want)
		}
	}
}

// A VM whose pod on an unreachable node was ended by fencing loses its NodeReachable
// condition in the status write that says so, not in a write of its own; a VM whose pod
// still runs there keeps it.
func TestNodeReachableGoesWithTheLastLivePod(t *testing.T) {
	now := metav1.Now()
	fenced := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-vm-x", DeletionTimestamp: &now},
		Spec: corev1.PodSpec{NodeName: "node-1"}, Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: v1alpha2.ReasonNodeFenced}}
	running := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-vm-y", CreationTimestamp: metav1.NewTime(now.Add(-time.Minute))},
		Spec: corev1.PodSpec{NodeName: "node-1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	restarted := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-vm-z", CreationTimestamp: metav1.NewTime(now.Add(5 * time.Second))},
		Spec: corev1.PodSpec{NodeName: "node-2"}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	for _, tc := range []struct {
		name string
		s    func(vm *v1alpha2.VirtualMachine) *scope
		keep bool
	}{
		{"pod ended by fencing", func(vm *v1alpha2.VirtualMachine) *scope {
			return &scope{vm: vm, terminating: []*corev1.Pod{fenced}, wantRun: true}
		}, false},
		{"restart pending", func(vm *v1alpha2.VirtualMachine) *scope { return &scope{vm: vm, wantRun: true} }, false},
		{"pod still on the node", func(vm *v1alpha2.VirtualMachine) *scope { return &scope{vm: vm, active: running, wantRun: true} }, true},
		{"restarted on another node", func(vm *v1alpha2.VirtualMachine) *scope { return &scope{vm: vm, active: restarted, wantRun: true} }, false},
	} {
		vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm", Generation: 1},
			Spec: v1alpha2.VirtualMachineSpec{RunPolicy: v1alpha2.AlwaysOn}}
		meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{Type: v1alpha2.VMConditionNodeReachable, Status: metav1.ConditionFalse,
			Reason: v1alpha2.ReasonFencingPending, Message: "node node-1 stopped renewing its Lease", LastTransitionTime: now})
		r := &Reconciler{}
		r.deriveStatus(tc.s(vm))
		if got := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionNodeReachable) != nil; got != tc.keep {
			t.Errorf("%s: NodeReachable kept %v, want %v", tc.name, got, tc.keep)
		}
	}
}
