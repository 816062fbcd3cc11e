package vm

import (
	"time"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Power values of the power-state annotation.
const (
	PowerOn  = "On"
	PowerOff = "Off"
)

// shouldRun tells whether a VM with this runPolicy and recorded power request must run.
// A Manual VM starts only after a Start operation; an AlwaysOnUnlessStoppedManually VM
// runs until a Stop operation or a shutdown from inside the guest records Off.
func shouldRun(policy v1alpha2.RunPolicy, power string) bool {
	switch policy {
	case v1alpha2.AlwaysOn:
		return true
	case v1alpha2.AlwaysOff:
		return false
	case v1alpha2.Manual:
		return power == PowerOn
	default: // AlwaysOnUnlessStoppedManually, the default
		return power != PowerOff
	}
}

// podOutcome is how a launcher pod ended.
type podOutcome int

const (
	// guestShutdown: the guest powered itself off (the pod Succeeded).
	guestShutdown podOutcome = iota
	// crashed: QEMU or the launcher died, or the node lost it (the pod Failed).
	crashed
	// nodeFenced: the VM's node failed and was fenced; the VM did nothing wrong.
	nodeFenced
)

// afterEnd says what the runPolicy makes of a pod that ended by itself: whether the VM
// is to be recorded as switched off (so it stays off) and the reason shown.
func afterEnd(policy v1alpha2.RunPolicy, o podOutcome) (recordOff bool, reason string) {
	if o == nodeFenced {
		// Only the policies that keep a VM on start it elsewhere; Manual waits for its user.
		return policy == v1alpha2.Manual || policy == v1alpha2.AlwaysOff, v1alpha2.ReasonNodeFenced
	}
	switch policy {
	case v1alpha2.AlwaysOn:
		if o == crashed {
			return false, v1alpha2.ReasonCrashed
		}
		return false, v1alpha2.ReasonGuestShutdown
	case v1alpha2.AlwaysOff:
		return true, v1alpha2.ReasonStoppedByPolicy
	case v1alpha2.Manual:
		if o == crashed {
			return true, v1alpha2.ReasonCrashed
		}
		return true, v1alpha2.ReasonGuestShutdown
	default:
		if o == crashed {
			return false, v1alpha2.ReasonCrashed
		}
		return true, v1alpha2.ReasonGuestShutdown
	}
}

// Restart pacing after crashes: the first restart is immediate, then 5 s doubling up to 2 min.
const (
	restartBase = 5 * time.Second
	restartMax  = 2 * time.Minute
	// stableAfter is how long a VM must run before its crash count is forgotten.
	stableAfter = 60 * time.Second
)

// restartDelay is how long to wait after a crash before starting the VM again.
func restartDelay(restarts int32) time.Duration {
	if restarts <= 0 {
		return 0
	}
	d := restartBase
	for i := int32(1); i < restarts && d < restartMax; i++ {
		d *= 2
	}
	return min(d, restartMax)
}
