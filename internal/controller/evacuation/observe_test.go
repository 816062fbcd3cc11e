package evacuation

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func evacuationOp(name string, created, ended time.Time, phase v1alpha2.OperationPhase, reason string) *v1alpha2.VirtualMachineOperation {
	op := &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: metav1.NewTime(created),
			Labels: map[string]string{v1alpha2.LabelEvacuation: "n1"}},
		Spec:   v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: "vm"},
		Status: v1alpha2.VirtualMachineOperationStatus{Phase: phase},
	}
	if phase == v1alpha2.OpCompleted || phase == v1alpha2.OpFailed {
		status := metav1.ConditionFalse
		if phase == v1alpha2.OpCompleted {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&op.Status.Conditions, metav1.Condition{Type: v1alpha2.OpConditionCompleted, Status: status,
			Reason: reason, Message: "details", LastTransitionTime: metav1.NewTime(ended)})
	}
	return op
}

// TestFailedEvacuationsBackOff: consecutive failures since the last success set the next
// try by the back-off, make the VM unmigratable after three, and say so to the drain.
func TestFailedEvacuationsBackOff(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha2.AddToScheme(s)
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	pod := launcher("virt-launcher-vm-abcde", "n1", "256Mi")
	vm := runningVM(func(vm *v1alpha2.VirtualMachine) {
		vm.Status.VirtualMachinePods = []v1alpha2.VirtualMachinePod{{Name: pod.Name, Active: true}}
	})
	n1, n2 := node("n1"), node("n2")
	objs := []client.Object{vm, &pod, &n1, &n2,
		evacuationOp("e1", t0, t0.Add(time.Minute), v1alpha2.OpFailed, v1alpha2.ReasonTargetFailed),
		evacuationOp("e2", t0.Add(2*time.Minute), t0.Add(3*time.Minute), v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted),
		evacuationOp("e3", t0.Add(4*time.Minute), t0.Add(5*time.Minute), v1alpha2.OpFailed, v1alpha2.ReasonTargetUnschedulable),
		evacuationOp("e4", t0.Add(6*time.Minute), t0.Add(7*time.Minute), v1alpha2.OpFailed, v1alpha2.ReasonNotConverging),
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
	b := Backoff{First: 10 * time.Second, Max: time.Minute}
	ctx := context.Background()

	st, err := Observe(ctx, c, vm, b)
	if err != nil {
		t.Fatal(err)
	}
	if st.Failures != 2 || st.LastFailure.Name != "e4" || st.InFlight != nil {
		t.Fatalf("failures %d, last %v, in flight %v", st.Failures, st.LastFailure, st.InFlight)
	}
	if want := t0.Add(7*time.Minute + 20*time.Second); !st.NextTry.Equal(want) {
		t.Errorf("next try %s, want %s", st.NextTry, want)
	}
	if ok, _, _ := st.migratable(); !ok {
		t.Error("two failures already make the VM unmigratable")
	}
	msg := Explain(vm, "n1", st, t0.Add(7*time.Minute+5*time.Second))
	if !strings.Contains(msg, "the last evacuation off node n1 failed (NotConverging: details); next try in 15s") {
		t.Errorf("explanation: %s", msg)
	}

	if err := c.Create(ctx, evacuationOp("e5", t0.Add(8*time.Minute), t0.Add(9*time.Minute), v1alpha2.OpFailed, v1alpha2.ReasonTargetFailed)); err != nil {
		t.Fatal(err)
	}
	if st, err = Observe(ctx, c, vm, b); err != nil {
		t.Fatal(err)
	}
	ok, reason, why := st.migratable()
	if ok || reason != ReasonMigrationFails || !strings.Contains(why, "the last 3 evacuations failed") {
		t.Errorf("after 3 failures: %v %s %s", ok, reason, why)
	}
	if want := t0.Add(9*time.Minute + 40*time.Second); !st.NextTry.Equal(want) {
		t.Errorf("next try %s, want %s", st.NextTry, want)
	}

	if err := c.Create(ctx, evacuationOp("e6", t0.Add(10*time.Minute), time.Time{}, v1alpha2.OpInProgress, "")); err != nil {
		t.Fatal(err)
	}
	if st, err = Observe(ctx, c, vm, b); err != nil {
		t.Fatal(err)
	}
	if st.InFlight == nil || st.InFlight.Name != "e6" {
		t.Fatalf("in flight %v", st.InFlight)
	}
	if msg := Explain(vm, "n1", st, t0.Add(10*time.Minute)); !strings.Contains(msg, "is being live-migrated off node n1 by VirtualMachineOperation e6") {
		t.Errorf("explanation: %s", msg)
	}
}
