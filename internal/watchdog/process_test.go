package watchdog

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
)

// fires records the calls of a server's fire function.
type fires struct {
	mu      sync.Mutex
	reasons []string
}

func (f *fires) fire(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reasons = append(f.reasons, reason)
}

func (f *fires) get() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reasons...)
}

// waitFires waits until n fires have been recorded and returns them.
func (f *fires) waitFires(t *testing.T, n int) []string {
	t.Helper()
	waitFor(t, 10*time.Second, func() bool { return len(f.get()) >= n })
	got := f.get()
	if len(got) != n {
		t.Fatalf("fired %d times, want %d: %q", len(got), n, got)
	}
	return got
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type testServer struct {
	socket string
	fires  *fires
	stop   func() error
}

// startServer runs Serve at socket until the test ends or stop is called.
func startServer(t *testing.T, socket string) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{socket: socket, fires: &fires{}}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, socket, s.fires.fire, testr.New(t)) }()
	var once sync.Once
	var err error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("Serve did not return after its context was cancelled")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Error(err)
		}
	})
	// The socket file appears at bind, a moment before it accepts connections.
	waitFor(t, 10*time.Second, func() bool {
		c, err := net.Dial("unix", socket)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return s
}

func socketPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "wd.sock")
}

// feedFor feeds w every interval for d.
func feedFor(t *testing.T, w Watchdog, d, interval time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(interval) {
		if err := w.Feed(); err != nil {
			t.Fatalf("Feed: %v", err)
		}
	}
}

func TestProcessFeedingKeepsItFromFiring(t *testing.T) {
	s := startServer(t, socketPath(t))
	p := DialProcess(s.socket)
	defer p.Close()

	const timeout = 400 * time.Millisecond
	if err := p.Arm(timeout); err != nil {
		t.Fatal(err)
	}
	feedFor(t, p, 5*timeout, timeout/10)
	if got := s.fires.get(); len(got) != 0 {
		t.Fatalf("fired while fed: %q", got)
	}

	reasons := s.fires.waitFires(t, 1)
	if r := reasons[0]; !strings.HasPrefix(r, "not fed for ") || !strings.HasSuffix(r, "(timeout 400ms)") {
		t.Errorf("reason %q", r)
	}
	// Having fired, it is disarmed: it cannot fire again until armed.
	if err := p.Feed(); !errors.Is(err, ErrNotArmed) {
		t.Errorf("Feed after the expiry: %v, want ErrNotArmed", err)
	}
}

func TestProcessDisarmStopsIt(t *testing.T) {
	s := startServer(t, socketPath(t))
	p := DialProcess(s.socket)
	defer p.Close()

	const timeout = 200 * time.Millisecond
	if err := p.Arm(timeout); err != nil {
		t.Fatal(err)
	}
	if err := p.Disarm(); err != nil {
		t.Fatal(err)
	}
	// Nothing can be waited for here: watch for a few timeouts that nothing fires.
	time.Sleep(4 * timeout)
	if got := s.fires.get(); len(got) != 0 {
		t.Fatalf("fired after Disarm: %q", got)
	}
	if err := p.Feed(); !errors.Is(err, ErrNotArmed) {
		t.Errorf("Feed after Disarm: %v, want ErrNotArmed", err)
	}
}

func TestProcessFiresAfterTheClientLeft(t *testing.T) {
	s := startServer(t, socketPath(t))
	p := DialProcess(s.socket)
	if err := p.Arm(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	s.fires.waitFires(t, 1)
	if err := p.Feed(); err == nil {
		t.Error("Feed succeeded on a closed client")
	}
}

func TestProcessRearmsAfterFiring(t *testing.T) {
	s := startServer(t, socketPath(t))
	p := DialProcess(s.socket)
	defer p.Close()

	if err := p.Arm(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	s.fires.waitFires(t, 1)
	if err := p.Arm(300 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	reasons := s.fires.waitFires(t, 2)
	if !strings.HasSuffix(reasons[1], "(timeout 300ms)") {
		t.Errorf("second reason %q", reasons[1])
	}
}

func TestProcessReconnectsToARestartedServer(t *testing.T) {
	socket := socketPath(t)
	s1 := startServer(t, socket)
	p := DialProcess(socket)
	defer p.Close()
	if err := p.Arm(time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s1.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind by a stopped server: %v", err)
	}
	if err := p.Feed(); err == nil {
		t.Fatal("Feed succeeded with no server")
	}

	s2 := startServer(t, socket)
	// The new server starts disarmed; the client says so rather than a connection error.
	if err := p.Feed(); !errors.Is(err, ErrNotArmed) {
		t.Fatalf("Feed to the restarted server: %v, want ErrNotArmed", err)
	}
	if err := p.Arm(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	s2.fires.waitFires(t, 1)
	if got := s1.fires.get(); len(got) != 0 {
		t.Errorf("the stopped server fired: %q", got)
	}
}

func TestProcessGivesUpOnAStuckServer(t *testing.T) {
	socket := socketPath(t)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept() // and never answer
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		ln.Close()
		for len(accepted) > 0 {
			(<-accepted).Close()
		}
	}()
	p := DialProcess(socket)
	p.deadline = 200 * time.Millisecond
	defer p.Close()

	errc := make(chan error, 1)
	go func() { errc <- p.Feed() }()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Feed succeeded though the server never answered")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Feed blocked on a stuck server")
	}
}

func TestServeProtocol(t *testing.T) {
	s := startServer(t, socketPath(t))
	conn, err := net.Dial("unix", s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(conn)
	for _, c := range []struct{ req, reply string }{
		{"feed", "error not armed"},
		{"disarm", "ok"},
		{"arm", "error "},
		{"arm 0", "error "},
		{"arm -5", "error "},
		{"arm soon", "error "},
		{"reset", "error "},
		{"arm 3600000", "ok"},
		{"  feed  ", "ok"},
		{"disarm", "ok"},
	} {
		if _, err := conn.Write([]byte(c.req + "\n")); err != nil {
			t.Fatal(err)
		}
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line = strings.TrimSuffix(line, "\n"); !strings.HasPrefix(line, c.reply) {
			t.Errorf("%q: reply %q, want %q…", c.req, line, c.reply)
		}
	}
}

func TestServeRefusesToRemoveANonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Serve(context.Background(), path, func(string) {}, testr.New(t))
	if err == nil {
		t.Fatal("Serve replaced a regular file")
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Errorf("file changed to %q", b)
	}
}
