package migration

import (
	"fmt"
	"time"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// autoConverge combines the VM's liveMigrationPolicy with the operation's force flag as
// Deckhouse does: force turns on auto-converge (throttling the guest's CPU until memory
// transfer catches up with its writes). AlwaysSafe refuses force=true; AlwaysForced refuses
// force=false; the Prefer policies let the flag decide and default to their own side.
func autoConverge(policy v1alpha2.LiveMigrationPolicy, force *bool) (bool, error) {
	switch policy {
	case v1alpha2.AlwaysSafe:
		if force != nil && *force {
			return false, fmt.Errorf("liveMigrationPolicy AlwaysSafe does not allow force=true: remove force or change the policy")
		}
		return false, nil
	case v1alpha2.AlwaysForced:
		if force != nil && !*force {
			return false, fmt.Errorf("liveMigrationPolicy AlwaysForced does not allow force=false: remove force or change the policy")
		}
		return true, nil
	case v1alpha2.PreferForced:
		return force == nil || *force, nil
	default: // PreferSafe
		return force != nil && *force, nil
	}
}

// startsSoon tells whether vm is on its way to Running: its runPolicy keeps it on and it
// waits for, or is starting in, a launcher pod.
func startsSoon(vm *v1alpha2.VirtualMachine) bool {
	return vm.Spec.RunPolicy != v1alpha2.AlwaysOff &&
		(vm.Status.Phase == v1alpha2.MachinePending || vm.Status.Phase == v1alpha2.MachineStarting)
}

// waitForRun keeps op Pending until its VM runs: why says what it waits for.
func waitForRun(op *v1alpha2.VirtualMachineOperation, why string) step {
	op.Status.Phase = v1alpha2.OpPending
	return step{opPhase: v1alpha2.OpPending, reason: v1alpha2.ReasonMigrationPending,
		message: why + ": the migration starts once it runs", requeue: 2 * time.Second}
}
