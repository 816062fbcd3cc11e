package migration

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/power"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// An Evict of a VM on its way to Running (a restart, ferry up resuming) waits for it; one
// of a VM that is off, or kept off, fails at once.
func TestEvictWaitsForAVMAboutToRun(t *testing.T) {
	for _, tc := range []struct {
		policy    v1alpha2.RunPolicy
		phase     v1alpha2.MachinePhase
		wantPhase v1alpha2.OperationPhase
		reason    string
	}{
		{v1alpha2.AlwaysOn, v1alpha2.MachinePending, v1alpha2.OpPending, v1alpha2.ReasonMigrationPending},
		{v1alpha2.AlwaysOnUnlessStoppedManually, v1alpha2.MachineStarting, v1alpha2.OpPending, v1alpha2.ReasonMigrationPending},
		{v1alpha2.Manual, v1alpha2.MachineStopped, v1alpha2.OpFailed, v1alpha2.ReasonNotApplicableState},
		{v1alpha2.AlwaysOff, v1alpha2.MachinePending, v1alpha2.OpFailed, v1alpha2.ReasonNotApplicableState},
		{v1alpha2.AlwaysOn, v1alpha2.MachineStopping, v1alpha2.OpFailed, v1alpha2.ReasonNotApplicableState},
		// Running says a status that has not caught up with the VM's pod: none runs it.
		{v1alpha2.AlwaysOn, v1alpha2.MachineRunning, v1alpha2.OpPending, v1alpha2.ReasonMigrationPending},
	} {
		t.Run(string(tc.policy)+"/"+string(tc.phase), func(t *testing.T) {
			s := runtime.NewScheme()
			_ = clientgoscheme.AddToScheme(s)
			_ = v1alpha2.AddToScheme(s)
			vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "vm-0"},
				Spec:   v1alpha2.VirtualMachineSpec{RunPolicy: tc.policy},
				Status: v1alpha2.VirtualMachineStatus{Phase: tc.phase}}
			op := pendingOp(0)
			c := fake.NewClientBuilder().WithScheme(s).WithObjects(vm, op).
				WithIndex(&v1alpha2.VirtualMachineOperation{}, power.IndexVMName, func(o client.Object) []string {
					return []string{o.(*v1alpha2.VirtualMachineOperation).Spec.VirtualMachineName}
				}).
				WithIndex(&corev1.Pod{}, launcherpod.IndexVM, func(o client.Object) []string {
					return []string{o.GetLabels()[v1alpha2.LabelVMName]}
				}).Build()
			r := &Reconciler{Client: c, Config: DefaultConfig(), Now: time.Now}
			got, err := r.pending(context.Background(), op)
			if err != nil {
				t.Fatal(err)
			}
			if got.opPhase != tc.wantPhase || got.reason != tc.reason {
				t.Errorf("step %+v, want phase %s reason %s", got, tc.wantPhase, tc.reason)
			}
		})
	}
}
