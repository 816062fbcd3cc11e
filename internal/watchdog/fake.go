package watchdog

import (
	"sync"
	"time"
)

// Fake is a Watchdog for tests: it records its calls and reports whether it would have
// fenced the node by a given time. It is safe for concurrent use.
type Fake struct {
	// Now is the clock; nil means time.Now. Set it before the first call.
	Now func() time.Time

	mu      sync.Mutex
	armed   bool
	timeout time.Duration
	fed     time.Time
	feeds   int
	closed  bool
	err     error
	calls   []Call
}

// Call is one call made to a Fake.
type Call struct {
	Op      string        // "arm", "feed", "disarm" or "close"
	At      time.Time     // when it was made
	Timeout time.Duration // the timeout of an arm
	Err     error         // what it returned
}

var _ Watchdog = (*Fake)(nil)

// Fail makes every later call return err (nil: succeed again), as a broken watchdog
// would. A failed call changes nothing.
func (f *Fake) Fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// Arm starts the countdown from now, or restarts it with a new timeout.
func (f *Fake) Arm(timeout time.Duration) error {
	return f.do("arm", timeout, func(now time.Time) error {
		if err := checkTimeout(timeout); err != nil {
			return err
		}
		f.armed, f.timeout, f.fed = true, timeout, now
		return nil
	})
}

// Feed restarts the countdown.
func (f *Fake) Feed() error {
	return f.do("feed", 0, func(now time.Time) error {
		if !f.armed {
			return ErrNotArmed
		}
		f.fed = now
		f.feeds++
		return nil
	})
}

// Disarm stops the countdown.
func (f *Fake) Disarm() error {
	return f.do("disarm", 0, func(time.Time) error {
		f.armed = false
		return nil
	})
}

// Close records the release; an armed Fake stays armed.
func (f *Fake) Close() error {
	return f.do("close", 0, func(time.Time) error {
		f.closed = true
		return nil
	})
}

func (f *Fake) do(op string, timeout time.Duration, apply func(now time.Time) error) error {
	now := time.Now()
	if f.Now != nil {
		now = f.Now()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.err
	if err == nil {
		err = apply(now)
	}
	f.calls = append(f.calls, Call{Op: op, At: now, Timeout: timeout, Err: err})
	return err
}

// Armed reports whether a countdown runs.
func (f *Fake) Armed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.armed
}

// Timeout is the timeout of the last successful arm.
func (f *Fake) Timeout() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.timeout
}

// Feeds counts the successful feeds.
func (f *Fake) Feeds() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.feeds
}

// Closed reports whether Close was called.
func (f *Fake) Closed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Expired reports whether a real watchdog would have fenced the node by now: it is armed
// and was last armed or fed more than the timeout before now.
func (f *Fake) Expired(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.armed && now.Sub(f.fed) > f.timeout
}

// Calls returns a copy of the calls made so far, in order.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}
