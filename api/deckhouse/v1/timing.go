package v1

import (
	"fmt"
	"time"
)

// DefaultWatchdogTimeout is Deckhouse's watchdog timeout when none is given.
const DefaultWatchdogTimeout = 60 * time.Second

// Timing is how a fenced node's heartbeat and watchdog are paced, and when the cluster may
// treat the node as fenced.
//
// The node agent renews its Lease every LeaseInterval and feeds the watchdog after a renewal
// only when that renewal took at most LeaseInterval; so a node whose last renewal was stamped
// at t has killed its VMs by t + LeaseInterval + Timeout. The fencing controller waits for
// t + Timeout + Margin, with Margin = 2 × LeaseInterval: one interval for the last feed,
// one for the watchdog to act and for clocks to differ.
// +kubebuilder:object:generate=false
type Timing struct {
	Timeout       time.Duration
	LeaseInterval time.Duration
	Margin        time.Duration
}

// FenceAfter is how old a node's Lease must be before the node counts as fenced.
func (t Timing) FenceAfter() time.Duration { return t.Timeout + t.Margin }

func (t Timing) String() string {
	return fmt.Sprintf("watchdog %s, lease renewed every %s, fenced %s after the last renewal", t.Timeout, t.LeaseInterval, t.FenceAfter())
}

// profiles are the named timings.
var profiles = map[FencingProfile]time.Duration{
	ProfileCritical: 2 * time.Second,
	ProfileFast:     5 * time.Second,
	ProfileBalanced: 10 * time.Second,
	ProfileTolerant: 20 * time.Second,
}

// TimingFor derives the timing of a watchdog timeout: the Lease is renewed five times per
// timeout (between 500 ms and 10 s apart).
func TimingFor(timeout time.Duration) Timing {
	interval := min(max(timeout/5, 500*time.Millisecond), 10*time.Second)
	// A lease renewed less often than the watchdog must be fed would let it fire.
	interval = min(interval, timeout/2)
	return ArmedTiming(timeout, interval)
}

// ArmedTiming is the timing of a watchdog armed with timeout on a node that renews its
// Lease every interval: the margin is two intervals.
func ArmedTiming(timeout, interval time.Duration) Timing {
	return Timing{Timeout: timeout, LeaseInterval: interval, Margin: 2 * interval}
}

// FencingEnabled tells whether the group's nodes fence themselves.
func (g *NodeGroup) FencingEnabled() bool {
	return g != nil && g.Spec.Fencing != nil && g.Spec.Fencing.Mode == FencingWatchdog
}

// Timing is the group's fencing timing: its explicit timeout, else its profile, else 60 s.
func (f *FencingSpec) Timing() Timing {
	timeout := DefaultWatchdogTimeout
	if w := f.Watchdog; w != nil {
		if d, ok := profiles[w.Profile]; ok {
			timeout = d
		}
		if w.Timeout != nil && w.Timeout.Duration > 0 {
			timeout = w.Timeout.Duration
		}
	}
	return TimingFor(timeout)
}
