package vm

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestHandover: a pod that ended as migrated while its migration still reads it stays,
// and while the target is not promoted the VM is in handover (its status is left as it
// was, not derived without a pod); once the operation is finished, the pod goes.
func TestHandover(t *testing.T) {
	sch := runtime.NewScheme()
	_ = v1alpha2.AddToScheme(sch)
	_ = corev1.AddToScheme(sch)
	source := func() *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "virt-launcher-vm-src"},
			Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{Name: "launcher",
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: v1alpha2.LauncherExitMigrated, Reason: v1alpha2.ReasonPodMigrated}}}}}}
	}
	target := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "virt-launcher-vm-tgt", Labels: map[string]string{v1alpha2.LabelMigrationTarget: "ev"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	op := func(phase v1alpha2.OperationPhase) *v1alpha2.VirtualMachineOperation {
		return &v1alpha2.VirtualMachineOperation{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ev"},
			Spec: v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: "vm"},
			Status: v1alpha2.VirtualMachineOperationStatus{Phase: phase,
				Migration: &v1alpha2.OperationMigrationStatus{Phase: v1alpha2.MigrationDone, SourcePod: "virt-launcher-vm-src"}}}
	}
	for _, tc := range []struct {
		name         string
		phase        v1alpha2.OperationPhase
		targets      []*corev1.Pod
		wantHandover bool
		wantKept     bool
	}{
		{"migration reads the source, target not promoted", v1alpha2.OpInProgress, []*corev1.Pod{target}, true, true},
		// Promoted: the target is the active pod already; nothing to wait for.
		{"target promoted", v1alpha2.OpInProgress, nil, false, true},
		{"operation finished", v1alpha2.OpCompleted, []*corev1.Pod{target}, false, false},
	} {
		src := source()
		c := fake.NewClientBuilder().WithScheme(sch).WithObjects(src, op(tc.phase)).
			WithIndex(&v1alpha2.VirtualMachineOperation{}, indexOpsByVM, func(o client.Object) []string {
				return []string{o.(*v1alpha2.VirtualMachineOperation).Spec.VirtualMachineName}
			}).Build()
		r := &Reconciler{Client: c, Recorder: record.NewFakeRecorder(10)}
		vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "vm"}}
		s := &scope{vm: vm, ended: []*corev1.Pod{src}, targets: tc.targets}
		if tc.name == "target promoted" {
			s.active = target
		}
		if err := r.handleEndedPods(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s.handover != tc.wantHandover {
			t.Errorf("%s: handover %v, want %v", tc.name, s.handover, tc.wantHandover)
		}
		err := c.Get(context.Background(), client.ObjectKeyFromObject(src), &corev1.Pod{})
		if kept := err == nil; kept != tc.wantKept {
			t.Errorf("%s: source pod kept %v (%v), want %v", tc.name, kept, err, tc.wantKept)
		} else if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
