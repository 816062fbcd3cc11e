package vm

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestDeriveMigrating(t *testing.T) {
	now := metav1.Now()
	started := &v1alpha2.MigrationState{StartTimestamp: &now, Source: v1alpha2.MigrationEndpoint{Node: "node-1"}, Target: v1alpha2.MigrationEndpoint{Pod: "tgt"}}
	ended := started.DeepCopy()
	ended.EndTimestamp, ended.Result = &now, v1alpha2.MigrationSucceeded
	op := func(target, progress string) *v1alpha2.VirtualMachineOperation {
		o := &v1alpha2.VirtualMachineOperation{ObjectMeta: metav1.ObjectMeta{Name: "ev"}, Status: v1alpha2.VirtualMachineOperationStatus{Progress: progress}}
		if target != "" {
			o.Status.Migration = &v1alpha2.OperationMigrationStatus{Phase: v1alpha2.MigrationDone, TargetPod: target}
		}
		return o
	}
	for _, tc := range []struct {
		name  string
		state *v1alpha2.MigrationState
		op    *v1alpha2.VirtualMachineOperation
		want  string // reason, or "" for no condition
	}{
		{"operation not started", nil, op("", ""), v1alpha2.ReasonMigratingPending},
		{"transferring", started, op("tgt", "40%"), v1alpha2.ReasonMigratingInProgress},
		// The VM's status shows this operation's migration ended: nothing is pending.
		{"arrived, operation completing", ended, op("tgt", "92%"), ""},
		// A new operation after an earlier migration ended waits to start.
		{"next operation", ended, op("", ""), v1alpha2.ReasonMigratingPending},
		{"next operation with its own target", ended, op("tgt-2", "10%"), v1alpha2.ReasonMigratingPending},
		{"nothing", ended, nil, ""},
	} {
		st := &v1alpha2.VirtualMachineStatus{MigrationState: tc.state}
		deriveMigrating(st, tc.op, 1)
		got := ""
		if c := meta.FindStatusCondition(st.Conditions, v1alpha2.VMConditionMigrating); c != nil {
			got = c.Reason
		}
		if got != tc.want {
			t.Errorf("%s: Migrating reason %q, want %q", tc.name, got, tc.want)
		}
	}
}
