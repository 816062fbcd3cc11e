package disklease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// DefaultTTL is how long a renewal vouches for a running holder.
const DefaultTTL = 3 * time.Second

// Record is the content of a lease file.
type Record struct {
	Token  int64  `json:"token"`
	Holder string `json:"holder"`
	Node   string `json:"node"`
	// RenewedAt is the last renewal; zero once the holder released the lease.
	RenewedAt time.Time `json:"renewedAt"`
	// TTLMillis is the holder's TTL: a claimant waits the longer of it and its
	// own, so a change of --lease-ttl during a rollout stays safe.
	TTLMillis int64 `json:"ttlMs,omitempty"`
	// Handover marks a record written by TakeOver: the same token passed to a
	// migration target, which the previous holder must not read as a fencing.
	Handover bool `json:"handover,omitempty"`
}

func (r Record) ttl() time.Duration { return time.Duration(r.TTLMillis) * time.Millisecond }

// fresh tells whether the holder renewed recently enough that it may still run.
func (r Record) fresh(now time.Time, ttl time.Duration) bool {
	return !r.RenewedAt.IsZero() && now.Sub(r.RenewedAt) < max(ttl, r.ttl())
}

// State is what Renew found.
type State int

const (
	// Held: the lease is still ours.
	Held State = iota
	// Superseded: a newer instance took the lease; this one was fenced.
	Superseded
	// HandedOver: a migration target took the lease with our token.
	HandedOver
)

func (s State) String() string {
	switch s {
	case Held:
		return "held"
	case Superseded:
		return "superseded"
	case HandedOver:
		return "handed over"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// SupersededError is returned by Acquire and TakeOver when a newer instance
// holds the lease.
type SupersededError struct {
	Path    string
	Token   int64  // ours
	Current Record // what the lease file holds
}

func (e *SupersededError) Error() string {
	cmp := ">"
	if e.Current.Token == e.Token {
		cmp = "="
	}
	return fmt.Sprintf("disk lease %s is held by a newer instance (token %d %s %d, holder %s on node %s)",
		e.Path, e.Current.Token, cmp, e.Token, e.Current.Holder, e.Current.Node)
}

// ErrReleased is returned by Renew after Release.
var ErrReleased = errors.New("disklease: lease released")

// Lease is one instance's claim on a disk lease. Its methods are safe for
// concurrent use.
type Lease struct {
	path     string
	token    int64
	holder   string
	node     string
	ttl      time.Duration
	handover bool

	mu       sync.Mutex
	current  Record // as last read from (or written to) the file
	released bool
}

// Acquire takes the lease at path for a cold start with token (> 0), as the
// doc explains; ttl <= 0 means DefaultTTL and log (may be nil) says what was
// taken from whom. A newer holder gives a *SupersededError. While it waits for
// a live older holder to stop, cancelling ctx gives ctx.Err() and releases the
// claim.
func Acquire(ctx context.Context, path string, token int64, holder, node string, ttl time.Duration, log func(string, ...any)) (*Lease, error) {
	if token <= 0 {
		return nil, fmt.Errorf("disklease: token must be positive, got %d", token)
	}
	if log == nil {
		log = func(string, ...any) {}
	}
	l := newLease(path, token, holder, node, ttl, false)
	var prev *Record
	var wait time.Duration
	err := update(ctx, path, func(cur *Record) (*Record, error) {
		now := time.Now()
		if cur != nil {
			if cur.Token > token {
				return nil, &SupersededError{Path: path, Token: token, Current: *cur}
			}
			prev = cur
			if !l.mine(*cur) && cur.fresh(now, l.ttl) {
				// Until the holder's last renewal runs out: a holder that renews on
				// time sees our token within a third of that and kills its QEMU
				// first; one that stopped renewing is gone or stuck.
				wait = cur.RenewedAt.Add(max(l.ttl, cur.ttl())).Sub(now)
			}
		}
		rec := l.record(now)
		l.current = rec
		return &rec, nil
	})
	if err != nil {
		return nil, err
	}
	switch {
	case prev == nil:
		log("disk lease %s: taken with token %d", path, token)
		return l, nil
	case wait == 0:
		log("disk lease %s: taken with token %d (previous holder %s on node %s, token %d, %s)",
			path, token, prev.Holder, prev.Node, prev.Token, renewal(prev.RenewedAt))
		return l, nil
	}
	log("disk lease %s: claimed with token %d from %s on node %s (token %d, %s), which may still run; waiting %s for it to stop",
		path, token, prev.Holder, prev.Node, prev.Token, renewal(prev.RenewedAt), wait)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		l.Release()
		return nil, ctx.Err()
	case <-t.C:
	}
	st, err := l.Renew()
	if err != nil {
		l.Release()
		return nil, fmt.Errorf("disk lease %s: after waiting for the previous holder: %w", path, err)
	}
	if st != Held {
		return nil, &SupersededError{Path: path, Token: token, Current: l.Current()}
	}
	return l, nil
}

func renewal(at time.Time) string {
	if at.IsZero() {
		return "released"
	}
	return fmt.Sprintf("renewed %s ago", time.Since(at).Round(time.Millisecond))
}

// TakeOver passes the lease at path to a live-migration target: same token,
// new holder. It is refused with a *SupersededError when a higher token is
// stored; a missing lease is created.
func TakeOver(path string, token int64, holder, node string, ttl time.Duration) (*Lease, error) {
	if token <= 0 {
		return nil, fmt.Errorf("disklease: token must be positive, got %d", token)
	}
	l := newLease(path, token, holder, node, ttl, true)
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
	defer cancel()
	err := update(ctx, path, func(cur *Record) (*Record, error) {
		if cur != nil && cur.Token > token {
			return nil, &SupersededError{Path: path, Token: token, Current: *cur}
		}
		rec := l.record(time.Now())
		l.current = rec
		return &rec, nil
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

func newLease(path string, token int64, holder, node string, ttl time.Duration, handover bool) *Lease {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Lease{path: path, token: token, holder: holder, node: node, ttl: ttl, handover: handover}
}

// Path returns the lease file.
func (l *Lease) Path() string { return l.path }

// Token returns our fencing token.
func (l *Lease) Token() int64 { return l.token }

// TTL returns our TTL; renew every TTL/3.
func (l *Lease) TTL() time.Duration { return l.ttl }

// Current returns the record as last read or written: after Renew reported
// Superseded or HandedOver, the newer holder.
func (l *Lease) Current() Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.current
}

// mine tells whether r was written by this holder.
func (l *Lease) mine(r Record) bool { return r.Holder == l.holder && r.Node == l.node }

func (l *Lease) record(now time.Time) Record {
	return Record{Token: l.token, Holder: l.holder, Node: l.node, RenewedAt: now.UTC(),
		TTLMillis: l.ttl.Milliseconds(), Handover: l.handover}
}

// Renew refreshes renewedAt if the lease is still ours. An error (storage
// unreachable, lock not had within a TTL) leaves the state unknown; the
// caller decides whether to keep running. A missing file (or a lower token)
// is rewritten: nobody newer claims the disk.
func (l *Lease) Renew() (State, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return Held, ErrReleased
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
	defer cancel()
	st := Held
	err := update(ctx, l.path, func(cur *Record) (*Record, error) {
		if cur != nil {
			switch {
			case cur.Token > l.token:
				st = Superseded
			case cur.Token == l.token && !l.mine(*cur) && cur.Handover:
				st = HandedOver
			case cur.Token == l.token && !l.mine(*cur):
				st = Superseded
			}
			if st != Held {
				l.current = *cur
				return nil, nil
			}
		}
		rec := l.record(time.Now())
		l.current = rec
		return &rec, nil
	})
	return st, err
}

// Release marks the lease free (renewedAt zero, token kept) if it is still
// ours, so the next start need not wait; call it once QEMU is gone. Later
// Renew calls return ErrReleased.
func (l *Lease) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.released = true
	ctx, cancel := context.WithTimeout(context.Background(), l.ttl)
	defer cancel()
	return update(ctx, l.path, func(cur *Record) (*Record, error) {
		if cur == nil || cur.Token != l.token || !l.mine(*cur) {
			return nil, nil
		}
		rec := *cur
		rec.RenewedAt = time.Time{}
		l.current = rec
		return &rec, nil
	})
}

// Read returns the record at path (nil if there is none), without locking.
func Read(path string) (*Record, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("disk lease: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		// Writes are atomic, so this is damage from outside; guessing could
		// start a second instance.
		return nil, fmt.Errorf("disk lease %s is unreadable (remove it only if no instance of the VM runs): %w", path, err)
	}
	return &r, nil
}

// update runs fn on the current record under the lease's lock and writes the
// record it returns (none: no write).
func update(ctx context.Context, path string, fn func(cur *Record) (*Record, error)) error {
	unlock, err := lock(ctx, path+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := Read(path)
	if err != nil {
		return err
	}
	next, err := fn(cur)
	if err != nil || next == nil {
		return err
	}
	return write(path, *next)
}

// lock takes an exclusive flock on path, polling so that ctx can end the wait
// (a blocking flock cannot be interrupted).
func lock(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("disk lease: %w", err)
	}
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("disk lease: lock %s: %w", path, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("disk lease: lock %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
}

// write replaces path with r atomically: a reader sees the old record or the
// new one, never a mix.
func write(path string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("disk lease: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("disk lease: writing %s: %w", path, err)
	}
	return nil
}
