package e2e

// What follows a real guest from outside while the platform moves it: an SSH session that
// ticks (ticker), and the VM's status as a watch streams it (statusWatch), to see states
// shorter than a poll.

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ticker is an SSH session whose guest side prints a counter every 50 ms; the host notes
// when each line arrives.
type ticker struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu       sync.Mutex
	stderr   bytes.Buffer
	lines    int
	next     int // the counter value expected next
	broken   string
	last     time.Time
	maxGap   time.Duration
	maxGapAt time.Time
}

// startTicker opens the session, waits until it ticks, and forgets the start-up's gaps.
func (g *debianGuest) startTicker(t *testing.T) *ticker {
	t.Helper()
	s := &ticker{cmd: exec.Command("ssh", g.sshArgs(tickerCmd)...), done: make(chan struct{})}
	s.cmd.Stderr = &lockedWriter{mu: &s.mu, w: &s.stderr}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.line(sc.Text())
		}
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(s.stop)
	s.waitLines(t, 20, 2*time.Minute)
	s.mu.Lock()
	s.maxGap, s.maxGapAt = 0, time.Time{}
	s.mu.Unlock()
	return s
}

func (s *ticker) line(l string) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := strconv.Atoi(strings.TrimSpace(l))
	switch {
	case err != nil:
		s.broken = fmt.Sprintf("line %q", l)
	case s.lines > 0 && n != s.next && s.broken == "":
		// A new session would count from 0 again; one stream counts on.
		s.broken = fmt.Sprintf("counter %d after %d", n, s.next-1)
	}
	s.next = n + 1
	if s.lines > 0 && now.Sub(s.last) > s.maxGap {
		s.maxGap, s.maxGapAt = now.Sub(s.last), now
	}
	s.lines++
	s.last = now
}

func (s *ticker) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lines
}

func (s *ticker) waitLines(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d lines from the SSH session", n), func() (bool, string) {
		select {
		case <-s.done:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("SSH session ended after %d lines: %v: %s", s.lines, s.err, strings.TrimSpace(s.stderr.String()))
		default:
		}
		c := s.count()
		return c >= n, fmt.Sprintf("%d lines", c)
	})
}

// assertAlive checks, after a move, that the session still ticks (2 s more of lines),
// was never reset, and reports its longest silence.
func (s *ticker) assertAlive(t *testing.T, what string) {
	t.Helper()
	s.waitLines(t, s.count()+40, time.Minute)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != "" {
		t.Errorf("SSH session through %s: not one stream: %s", what, s.broken)
	}
	// TCP retransmits what the switchover dropped; seconds of silence would mean the
	// guest or its address was away far longer than a live migration allows.
	if s.maxGap > 10*time.Second {
		t.Errorf("SSH session through %s: silent for %s", what, s.maxGap.Round(time.Millisecond))
	}
	t.Logf("%s: SSH session alive, %d lines, longest gap %s at %s", what, s.lines,
		s.maxGap.Round(time.Millisecond), s.maxGapAt.Format("15:04:05.000"))
}

func (s *ticker) stop() {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// statusWatch follows `kubectl get vm -w`, to see a phase that lasts less than a poll.
type statusWatch struct {
	mu    sync.Mutex
	lines []string
	cond  *sync.Cond
}

func watchVMStatus(t *testing.T, vm string) *statusWatch {
	t.Helper()
	w := &statusWatch{}
	w.cond = sync.NewCond(&w.mu)
	cmd := exec.Command(cl.bin, "--state-dir", cl.stateDir, "k", "get", "vm", vm, "-w", "-o",
		`jsonpath={.status.phase}/{.status.conditions[?(@.type=="Running")].reason}{"\n"}`)
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.mu.Lock()
			if l := strings.TrimSpace(sc.Text()); l != "" && (len(w.lines) == 0 || w.lines[len(w.lines)-1] != l) {
				w.lines = append(w.lines, l)
			}
			w.cond.Broadcast()
			w.mu.Unlock()
		}
	}()
	return w
}

// waitFor tells whether the watch showed status s (phase/reason), or any status if s is
// empty, within timeout.
func (w *statusWatch) waitFor(s string, timeout time.Duration) bool {
	timer := time.AfterFunc(timeout, func() { w.mu.Lock(); w.cond.Broadcast(); w.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for _, l := range w.lines {
			if l == s || s == "" {
				return true
			}
		}
		if !time.Now().Before(deadline) {
			return false
		}
		w.cond.Wait()
	}
}

func (w *statusWatch) seen() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.lines...)
}
