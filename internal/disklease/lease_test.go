package disklease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const testTTL = 200 * time.Millisecond

// logSink collects what Acquire logs.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) printf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, fmt.Sprintf(format, args...))
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

func leasePath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "disk.qcow2.lease")
}

func mustRead(t *testing.T, path string) Record {
	t.Helper()
	r, err := Read(path)
	if err != nil || r == nil {
		t.Fatalf("Read(%s) = %v, %v", path, r, err)
	}
	return *r
}

// waitFor polls cond every 10ms until it holds or d elapses.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAcquire(t *testing.T) {
	const (
		take   = "take"
		wait   = "wait"
		refuse = "refuse"
	)
	tests := []struct {
		name string
		// stored is the lease found; its renewal is age ago (never, if released).
		stored   *Record
		age      time.Duration
		released bool
		token    int64
		want     string
		// minWait is how long after the old holder's last renewal Acquire may return,
		// when want == wait: that renewal's life.
		minWait time.Duration
	}{
		{name: "no lease", token: 1, want: take},
		{name: "stale older holder", stored: &Record{Token: 1, Holder: "old", Node: "n0"}, age: 10 * testTTL, token: 2, want: take},
		{name: "released older holder", stored: &Record{Token: 1, Holder: "old", Node: "n0"}, released: true, token: 2, want: take},
		{name: "live older holder", stored: &Record{Token: 1, Holder: "old", Node: "n0"}, age: 0, token: 2, want: wait, minWait: testTTL},
		{name: "live older holder with a longer TTL", stored: &Record{Token: 1, Holder: "old", Node: "n0", TTLMillis: (5 * testTTL).Milliseconds()}, age: 2 * testTTL, token: 2, want: wait, minWait: 5 * testTTL},
		{name: "newer holder", stored: &Record{Token: 3, Holder: "new", Node: "n1"}, age: 0, token: 2, want: refuse},
		{name: "newer holder released", stored: &Record{Token: 3, Holder: "new", Node: "n1"}, released: true, token: 2, want: refuse},
		{name: "same token, live other holder", stored: &Record{Token: 2, Holder: "other", Node: "n1"}, age: 0, token: 2, want: wait, minWait: testTTL},
		{name: "same token, stale other holder", stored: &Record{Token: 2, Holder: "other", Node: "n1"}, age: 10 * testTTL, token: 2, want: take},
		{name: "same holder on another node", stored: &Record{Token: 1, Holder: "me", Node: "n9"}, age: 0, token: 2, want: wait, minWait: testTTL},
		{name: "our own record", stored: &Record{Token: 2, Holder: "me", Node: "n1"}, age: 0, token: 2, want: take},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := leasePath(t)
			var renewedAt time.Time
			if tt.stored != nil {
				rec := *tt.stored
				if !tt.released {
					rec.RenewedAt = time.Now().Add(-tt.age).UTC()
					renewedAt = rec.RenewedAt
				}
				if err := write(path, rec); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := os.ReadFile(path)
			var log logSink
			l, err := Acquire(context.Background(), path, tt.token, "me", "n1", testTTL, log.printf)
			returned := time.Now()

			if tt.want == refuse {
				var sup *SupersededError
				if !errors.As(err, &sup) || l != nil {
					t.Fatalf("Acquire = %v, %v; want a *SupersededError", l, err)
				}
				want := fmt.Sprintf("token %d > %d, holder %s on node %s", tt.stored.Token, tt.token, tt.stored.Holder, tt.stored.Node)
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
				if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
					t.Errorf("a refused Acquire changed the lease:\n%s\n->\n%s", before, after)
				}
				return
			}
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			got := mustRead(t, path)
			if got.Token != tt.token || got.Holder != "me" || got.Node != "n1" || got.RenewedAt.IsZero() || got.Handover {
				t.Errorf("lease after Acquire: %+v", got)
			}
			waited := strings.Contains(log.String(), "waiting")
			if waited != (tt.want == wait) {
				t.Errorf("waited = %v, want %v; log:\n%s", waited, tt.want == wait, log.String())
			}
			if life := returned.Sub(renewedAt); tt.want == wait && life < tt.minWait {
				t.Errorf("Acquire returned %v after the old holder's renewal, before its %v were up", life, tt.minWait)
			}
			if st, err := l.Renew(); st != Held || err != nil {
				t.Errorf("Renew after Acquire = %v, %v", st, err)
			}
		})
	}
}

func TestAcquireRejectsBadInput(t *testing.T) {
	path := leasePath(t)
	if _, err := Acquire(context.Background(), path, 0, "me", "n1", testTTL, nil); err == nil {
		t.Error("Acquire with token 0 succeeded")
	}
	os.WriteFile(path, []byte(`{"token":`), 0o644)
	_, err := Acquire(context.Background(), path, 1, "me", "n1", testTTL, nil)
	var sup *SupersededError
	if err == nil || errors.As(err, &sup) || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("Acquire over a damaged lease = %v; want an unreadable-lease error", err)
	}
}

func TestEveryUpdateTakesTheLock(t *testing.T) {
	path := leasePath(t)
	unlock, err := lock(context.Background(), path+".lock")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Acquire(ctx, path, 1, "me", "n1", testTTL, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire while another holds the lock = %v; want a deadline error", err)
	}
	if r, _ := Read(path); r != nil {
		t.Fatalf("Acquire wrote without the lock: %+v", r)
	}
	unlock()
	l, err := Acquire(context.Background(), path, 1, "me", "n1", testTTL, nil)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err = lock(context.Background(), path+".lock")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := l.Renew(); err == nil {
		t.Error("Renew succeeded while another held the lock")
	}
}

func TestRenewSupersededAndHandover(t *testing.T) {
	path := leasePath(t)
	a, err := Acquire(context.Background(), path, 1, "a", "n1", testTTL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := a.Renew(); st != Held || err != nil {
		t.Fatalf("a.Renew = %v, %v", st, err)
	}

	// b claims with a higher token; a is live, so b waits a TTL before starting.
	type result struct {
		l   *Lease
		err error
	}
	bDone := make(chan result, 1)
	go func() {
		l, err := Acquire(context.Background(), path, 2, "b", "n2", testTTL, nil)
		bDone <- result{l, err}
	}()
	waitFor(t, 5*time.Second, "b's claim", func() bool { r, _ := Read(path); return r != nil && r.Token == 2 })
	if st, err := a.Renew(); st != Superseded || err != nil {
		t.Fatalf("a.Renew after b's claim = %v, %v; want superseded", st, err)
	}
	if cur := a.Current(); cur.Token != 2 || cur.Holder != "b" {
		t.Errorf("a.Current() = %+v, want b's record", cur)
	}
	if st, _ := a.Renew(); st != Superseded {
		t.Errorf("a superseded, then Renew = %v", st)
	}
	var b *Lease
	select {
	case r := <-bDone:
		if r.err != nil {
			t.Fatalf("b's Acquire: %v", r.err)
		}
		b = r.l
	case <-time.After(5 * time.Second):
		t.Fatal("b's Acquire did not return")
	}

	// A migration target takes over b's token.
	tg, err := TakeOver(path, 2, "target", "n3", testTTL)
	if err != nil {
		t.Fatal(err)
	}
	if r := mustRead(t, path); r.Token != 2 || r.Holder != "target" || !r.Handover {
		t.Errorf("after TakeOver: %+v", r)
	}
	if st, err := b.Renew(); st != HandedOver || err != nil {
		t.Errorf("b.Renew after the handover = %v, %v; want handed over", st, err)
	}
	if st, err := tg.Renew(); st != Held || err != nil {
		t.Errorf("target.Renew = %v, %v", st, err)
	}
	if st, _ := b.Renew(); st != HandedOver {
		t.Errorf("b.Renew after the target renewed = %v; want handed over", st)
	}
	if r := mustRead(t, path); !r.Handover || r.Holder != "target" {
		t.Errorf("the target's renewal lost the handover mark: %+v", r)
	}
	// b's release leaves the target's lease alone.
	if err := b.Release(); err != nil {
		t.Fatal(err)
	}
	if r := mustRead(t, path); r.Holder != "target" || r.RenewedAt.IsZero() {
		t.Errorf("b's release touched the target's lease: %+v", r)
	}

	// A claim with the same token that is no handover fences the target.
	cDone := make(chan error, 1)
	go func() {
		_, err := Acquire(context.Background(), path, 2, "c", "n4", testTTL, nil)
		cDone <- err
	}()
	waitFor(t, 5*time.Second, "c's claim", func() bool { r, _ := Read(path); return r != nil && r.Holder == "c" })
	if st, _ := tg.Renew(); st != Superseded {
		t.Errorf("target.Renew after a same-token claim = %v; want superseded", st)
	}
	if err := <-cDone; err != nil {
		t.Errorf("c's Acquire: %v", err)
	}

	// No takeover past a newer token.
	_, err = TakeOver(path, 1, "late", "n5", testTTL)
	var sup *SupersededError
	if !errors.As(err, &sup) || sup.Current.Holder != "c" {
		t.Errorf("TakeOver with an older token = %v; want *SupersededError naming c", err)
	}
}

func TestTakeOverWithoutLease(t *testing.T) {
	path := leasePath(t)
	l, err := TakeOver(path, 4, "target", "n1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if r := mustRead(t, path); r.Token != 4 || r.Holder != "target" || l.TTL() != DefaultTTL {
		t.Errorf("TakeOver on no lease: %+v, ttl %v", r, l.TTL())
	}
}

func TestRelease(t *testing.T) {
	path := leasePath(t)
	a, err := Acquire(context.Background(), path, 1, "a", "n1", testTTL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if r := mustRead(t, path); r.Token != 1 || r.Holder != "a" || !r.RenewedAt.IsZero() {
		t.Errorf("after Release: %+v; want token 1, renewedAt zero", r)
	}
	if _, err := a.Renew(); !errors.Is(err, ErrReleased) {
		t.Errorf("Renew after Release = %v, want ErrReleased", err)
	}
	if b, _ := json.Marshal(mustRead(t, path)); !strings.Contains(string(b), `"renewedAt":"0001-01-01T00:00:00Z"`) {
		t.Errorf("released record %s", b)
	}

	// The next start takes the released lease without waiting.
	var log logSink
	b, err := Acquire(context.Background(), path, 2, "b", "n2", testTTL, log.printf)
	if err != nil {
		t.Fatal(err)
	}
	if s := log.String(); strings.Contains(s, "waiting") || !strings.Contains(s, "released") {
		t.Errorf("Acquire after a release logged %q; want no wait", s)
	}
	// A superseded holder's release changes nothing.
	before, _ := os.ReadFile(path)
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("a superseded release changed the lease:\n%s\n->\n%s", before, after)
	}
	b.Release()
}

func TestAcquireCancelledWhileWaiting(t *testing.T) {
	path := leasePath(t)
	if err := write(path, Record{Token: 1, Holder: "old", Node: "n0", RenewedAt: time.Now().UTC(), TTLMillis: 60_000}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Acquire(ctx, path, 2, "me", "n1", testTTL, nil)
		done <- err
	}()
	waitFor(t, 5*time.Second, "the claim", func() bool { r, _ := Read(path); return r != nil && r.Token == 2 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Acquire = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled Acquire kept waiting")
	}
	if r := mustRead(t, path); r.Token != 2 || !r.RenewedAt.IsZero() {
		t.Errorf("after a cancelled Acquire: %+v; want our token, released", r)
	}
}

// TestConcurrentAcquire runs instances with tokens 1..n at once, each renewing
// like a launcher until fenced: the highest token ends up the only holder.
func TestConcurrentAcquire(t *testing.T) {
	path := leasePath(t)
	const n = 6
	type outcome struct {
		token int64
		how   string // "refused", "superseded", "held"
	}
	stop := make(chan struct{})
	out := make(chan outcome, n)
	var wg sync.WaitGroup
	for tok := int64(1); tok <= n; tok++ {
		wg.Go(func() {
			l, err := Acquire(context.Background(), path, tok, fmt.Sprintf("h%d", tok), "n", testTTL, nil)
			var sup *SupersededError
			if errors.As(err, &sup) {
				out <- outcome{tok, "refused"}
				return
			}
			if err != nil {
				out <- outcome{tok, "error: " + err.Error()}
				return
			}
			tick := time.NewTicker(l.TTL() / 3)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					out <- outcome{tok, "held"}
					return
				case <-tick.C:
				}
				st, err := l.Renew()
				if err != nil {
					out <- outcome{tok, "error: " + err.Error()}
					return
				}
				if st != Held {
					out <- outcome{tok, st.String()}
					return
				}
			}
		})
	}
	got := map[int64]string{}
	deadline := time.After(20 * time.Second)
	for len(got) < n-1 {
		select {
		case o := <-out:
			got[o.token] = o.how
		case <-deadline:
			t.Fatalf("only %d of %d lower-token instances stopped: %v", len(got), n-1, got)
		}
	}
	close(stop)
	wg.Wait()
	close(out)
	for o := range out {
		got[o.token] = o.how
	}
	for tok := int64(1); tok < n; tok++ {
		if got[tok] != "refused" && got[tok] != "superseded" {
			t.Errorf("token %d: %s; want refused or superseded", tok, got[tok])
		}
	}
	if got[n] != "held" {
		t.Errorf("token %d: %s; want held", n, got[n])
	}
	if r := mustRead(t, path); r.Token != n || r.Holder != fmt.Sprintf("h%d", n) {
		t.Errorf("lease at the end: %+v", r)
	}
	t.Logf("outcomes: %v", got)
}

// TestWriteIsAtomic reads the lease without the lock while it is rewritten
// over and over: every read must be a whole record, and no temporary file may
// be left behind.
func TestWriteIsAtomic(t *testing.T) {
	path := leasePath(t)
	l, err := Acquire(context.Background(), path, 1, strings.Repeat("holder-", 500), "n1", testTTL, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var reads int
	var bad error
	go func() {
		defer close(done)
		for i := 0; i < 300; i++ {
			if _, err := l.Renew(); err != nil {
				bad = err
				return
			}
		}
	}()
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read during a rewrite: %v", err)
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil || r.Token != 1 {
			t.Fatalf("read %d saw a partial record (%v): %.80q", reads, err, b)
		}
		reads++
	}
	if bad != nil {
		t.Fatal(bad)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"disk.qcow2.lease", "disk.qcow2.lease.lock"}; strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("files beside the lease: %v; want %v", names, want)
	}
	t.Logf("%d whole reads during 300 rewrites", reads)
}
