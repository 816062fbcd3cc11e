package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestOverlaps(t *testing.T) {
	at := func(s float64) time.Time {
		return time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(s * float64(time.Second)))
	}
	old := InstanceSpan{Dir: "/s/nodes/node-1/pods/a", Node: "node-1", First: at(0), Last: at(5)}
	for _, tc := range []struct {
		name string
		new  InstanceSpan
		want int
	}{
		{"after", InstanceSpan{Dir: "/s/nodes/node-2/pods/b", Node: "node-2", First: at(12), Last: at(20)}, 0},
		{"during", InstanceSpan{Dir: "/s/nodes/node-2/pods/b", Node: "node-2", First: at(4), Last: at(20)}, 1},
		{"same instant", InstanceSpan{Dir: "/s/nodes/node-2/pods/b", Node: "node-2", First: at(5), Last: at(5)}, 1},
		{"never counted", InstanceSpan{Dir: "/s/nodes/node-2/pods/b", Node: "node-2"}, 0},
	} {
		if got := Overlaps([]InstanceSpan{old, tc.new}); len(got) != tc.want {
			t.Errorf("%s: %d overlaps %v, want %d", tc.name, len(got), got, tc.want)
		}
	}
}

// TestInstanceWatch follows two instances in a fake state directory: what a log held at the
// first poll does not count, lines printed afterwards do.
func TestInstanceWatch(t *testing.T) {
	state := t.TempDir()
	mk := func(node, uid, launcher string) string {
		dir := filepath.Join(state, "nodes", node, "pods", uid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "launcher.log"), []byte(launcher), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	appendLog := func(dir, s string) {
		f, err := os.OpenFile(filepath.Join(dir, "serial.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	old := mk("node-1", "a", "VM default/vm: qemu pid 10 (tcg)\n")
	other := mk("node-3", "c", "VM default/other: qemu pid 12 (tcg)\n")
	appendLog(old, "CNT 1\nCNT 2\n")
	appendLog(other, "CNT 7\n")

	w := NewInstanceWatch(state, "default", "vm")
	t0 := time.Now()
	w.Poll(t0) // baseline
	if s, _ := w.Span(old); !s.First.IsZero() {
		t.Fatalf("the baseline counted: %+v", s)
	}
	appendLog(old, "CNT 3\n")
	w.Poll(t0.Add(100 * time.Millisecond))
	appendLog(old, "CNT 4\n")
	appendLog(other, "CNT 8\n")
	w.Poll(t0.Add(200 * time.Millisecond))

	// The new instance starts (its launcher has not logged QEMU yet), then boots.
	fresh := mk("node-2", "b", "")
	w.Poll(t0.Add(300 * time.Millisecond))
	os.WriteFile(filepath.Join(fresh, "launcher.log"), []byte("VM default/vm: qemu pid 11 (tcg)\n"), 0o644)
	appendLog(fresh, "FERRY-GUEST BOOTED\nCNT 1\n")
	w.Poll(t0.Add(900 * time.Millisecond))
	w.Poll(t0.Add(time.Second)) // nothing new

	spans := w.Spans()
	if len(spans) != 2 {
		t.Fatalf("spans %+v, want the VM's two instances", spans)
	}
	so, _ := w.Span(old)
	if so.First != t0.Add(100*time.Millisecond) || so.Last != t0.Add(200*time.Millisecond) || so.Node != "node-1" {
		t.Errorf("old instance %+v", so)
	}
	sf, _ := w.Span(fresh)
	if sf.First != t0.Add(900*time.Millisecond) || sf.Last != sf.First || sf.Node != "node-2" {
		t.Errorf("new instance %+v", sf)
	}
	if ov := Overlaps(spans); len(ov) != 0 {
		t.Errorf("overlaps %v", ov)
	}
}

// TestQEMUCount runs two processes that look like QEMUs of one VM (a copy of sh named
// qemu-system-…) and one of another VM, and counts them from /proc.
func TestQEMUCount(t *testing.T) {
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatalf("no /bin/sh to pose as QEMU: %v", err)
	}
	fake := filepath.Join(t.TempDir(), "qemu-system-fake")
	if err := os.WriteFile(fake, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func(guest string) {
		// sh -c SCRIPT NAME ARG: the arguments stay on its command line. The script is a
		// builtin waiting on stdin: a forked child would be a second look-alike.
		cmd := exec.Command(fake, "-c", "read x", "-name", "guest="+guest)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); stdin.Close(); cmd.Wait() })
	}
	ns, vm := "bench-test", fmt.Sprintf("vm-%d", os.Getpid())
	if got := QEMUCount(ns, vm); got != 0 {
		t.Fatalf("qemuCount before = %d", got)
	}
	start(ns + "/" + vm)
	start(ns + "/" + vm)
	start(ns + "/" + vm + "-other")
	if got := QEMUCount(ns, vm); got != 2 {
		t.Errorf("qemuCount = %d, want 2", got)
	}
}
