package watchdog

import (
	"errors"
	"fmt"
	"time"
)

// Watchdog is a timer that fences the node when it is not fed in time.
type Watchdog interface {
	// Arm starts the countdown, or re-arms it with a new timeout; it counts from now.
	Arm(timeout time.Duration) error
	// Feed restarts the countdown. It fails with ErrNotArmed when there is none.
	Feed() error
	// Disarm stops the countdown cleanly (planned maintenance, agent shutdown).
	Disarm() error
	// Close releases the watchdog. An armed watchdog stays armed, as a real one does:
	// a feeder that crashed must not stop it.
	Close() error
}

// ErrNotArmed is returned by Feed when no countdown runs: it was never armed, was
// disarmed, or expired (and reset the node).
var ErrNotArmed = errors.New("watchdog is not armed")

func checkTimeout(timeout time.Duration) error {
	if timeout <= 0 {
		return fmt.Errorf("watchdog timeout must be positive, not %s", timeout)
	}
	return nil
}
