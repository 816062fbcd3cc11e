package watchdog

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	f := &Fake{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	if err := f.Feed(); !errors.Is(err, ErrNotArmed) {
		t.Fatalf("Feed before Arm: %v", err)
	}
	if err := f.Arm(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if !f.Armed() || f.Timeout() != 5*time.Second {
		t.Fatalf("after Arm: armed %v, timeout %s", f.Armed(), f.Timeout())
	}
	advance(4 * time.Second)
	if err := f.Feed(); err != nil {
		t.Fatal(err)
	}
	if f.Expired(now.Add(5 * time.Second)) {
		t.Error("expired exactly at the timeout after a feed")
	}
	if !f.Expired(now.Add(5*time.Second + time.Millisecond)) {
		t.Error("not expired past the timeout")
	}

	broken := errors.New("broken")
	f.Fail(broken)
	if err := f.Feed(); !errors.Is(err, broken) {
		t.Errorf("Feed of a failing fake: %v", err)
	}
	f.Fail(nil)

	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !f.Armed() || !f.Closed() {
		t.Error("Close disarmed the fake")
	}
	if err := f.Disarm(); err != nil {
		t.Fatal(err)
	}
	if f.Armed() || f.Expired(now.Add(time.Hour)) {
		t.Error("disarmed fake still armed")
	}
	if f.Feeds() != 1 {
		t.Errorf("Feeds %d, want 1", f.Feeds())
	}
	var ops []string
	for _, c := range f.Calls() {
		ops = append(ops, c.Op)
	}
	if got, want := ops, []string{"feed", "arm", "feed", "feed", "close", "disarm"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

func TestFakeConcurrent(t *testing.T) {
	f := &Fake{}
	if err := f.Arm(time.Minute); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_ = f.Feed()
				_ = f.Armed()
			}
		})
	}
	wg.Wait()
	if f.Feeds() != 800 {
		t.Errorf("Feeds %d, want 800", f.Feeds())
	}
}
