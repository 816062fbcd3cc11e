package launcher

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// guestLog records SimOptions.OnGuest calls and how many guests of each VM ran at most at once.
type guestLog struct {
	mu      sync.Mutex
	running map[string]int
	most    map[string]int
	events  []string
}

func (g *guestLog) observe(vm, instance string, running bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if running {
		g.running[vm]++
	} else {
		g.running[vm]--
	}
	g.most[vm] = max(g.most[vm], g.running[vm])
	g.events = append(g.events, vm+" "+map[bool]string{true: "runs", false: "stops"}[running])
}

func (g *guestLog) now(vm string) (running, most int, events string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running[vm], g.most[vm], strings.Join(g.events, ", ")
}

// OnGuest sees a migrated guest stop on the source before it runs on the target, and a
// stopped guest stop: never two running guests of one VM.
func TestSimulatedOnGuest(t *testing.T) {
	g := &guestLog{running: map[string]int{}, most: map[string]int{}}
	so := SimOptions{Net: NewSimNet(), MigrationTime: 100 * time.Millisecond, Downtime: 20 * time.Millisecond,
		HeartbeatInterval: 5 * time.Millisecond, OnGuest: g.observe}
	src := startSimulated(t, so, Options{VMName: "db", Namespace: "prod"})
	dst := startSimulated(t, so, Options{VMName: "db", Namespace: "prod", Incoming: true, MigrationAddress: "192.0.2.7"})
	src.poll(t, 5*time.Second, "booted", func(s Status) bool { return s.Booted })
	uri := dst.poll(t, 5*time.Second, "incomingURI", func(s Status) bool { return s.IncomingURI != "" }).IncomingURI
	if n, _, ev := g.now("prod/db"); n != 1 {
		t.Fatalf("%d guests run after the source booted and the target waits, want 1 (%s)", n, ev)
	}
	migrateTo(t, src, uri)
	if code := src.wait(t, 5*time.Second); code != ExitMigrated {
		t.Fatalf("source exit code %d, want %d", code, ExitMigrated)
	}
	n, most, ev := g.now("prod/db")
	if n != 1 || most != 1 || ev != "prod/db runs, prod/db stops, prod/db runs" {
		t.Errorf("after the migration: %d running, at most %d at once; events: %s", n, most, ev)
	}
	dst.stop(t)
	if n, _, ev := g.now("prod/db"); n != 0 {
		t.Errorf("%d guests run after the target stopped (%s)", n, ev)
	}
}
