package hypervisor

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestQEMURunsUnderItsSandbox: QEMU installs its own seccomp filter (-sandbox) on top of
// whatever this process has, before the guest runs.
func TestQEMURunsUnderItsSandbox(t *testing.T) {
	img := guestImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := Start(ctx, Config{Name: "sandboxed", MemoryKiB: 131064,
		Disks: []Disk{{Path: img, Format: "raw", ReadOnly: true}}, RunDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer inst.Kill()
	filters := func(pid string) int {
		b, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^Seccomp_filters:\s+(\d+)$`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("/proc/%s/status reports no seccomp filters (Linux 5.9 or later does)", pid)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	own, qemu := filters("self"), filters(strconv.Itoa(inst.PID()))
	if qemu <= own {
		t.Errorf("QEMU has %d seccomp filters, this process %d: want QEMU's sandbox on top", qemu, own)
	}
	t.Logf("seccomp filters: this process %d, QEMU %d", own, qemu)
}
