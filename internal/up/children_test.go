package up

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// A child killed while its hold file exists (a node's agent or watchdog after ferry node
// poweroff) stays down until the file goes (poweron); then it starts again.
func TestChildHeldWhilePoweredOff(t *testing.T) {
	dir := t.TempDir()
	hold := filepath.Join(dir, "powered-off")
	c := &child{name: "node-1 watchdog", argv: []string{"sleep", "600"}, log: filepath.Join(dir, "w.log"), holdWhile: hold}
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	defer c.stop(time.Second)
	var mu sync.Mutex
	var reports []string
	go c.supervise(func(s string) { mu.Lock(); reports = append(reports, s); mu.Unlock() })
	reported := func(sub string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range reports {
			if strings.Contains(r, sub) {
				return true
			}
		}
		return false
	}

	first := c.Pid()
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return reported("is powered off"), nil
	}); err != nil {
		t.Fatalf("no report of the power-off: %v", reports)
	}
	// Held: over twice the supervisor's restart pace, no new process.
	if err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2500*time.Millisecond, true, func(context.Context) (bool, error) {
		return c.Pid() != first, nil
	}); err == nil {
		t.Fatalf("restarted while powered off (pid %d, was %d)", c.Pid(), first)
	}
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return c.Pid() != first, nil
	}); err != nil {
		t.Fatalf("not started again after poweron: %v", reports)
	}
}
