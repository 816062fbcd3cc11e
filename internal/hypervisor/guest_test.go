package hypervisor

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The test guest's heartbeat is how every QEMU test here tells a live guest from a dead one,
// so it must outlive the guest running out of memory: a dirty buffer (tmpfs, which no kill
// frees) that would leave the guest too little is refused, and the OOM killer takes the
// command that ate the memory, never the heartbeat loop. (A 128 MiB guest once dirtied 64
// MiB, the kernel killed its heartbeat, and a migration test saw a guest that looked dead.)
func TestGuestHeartbeatOutlivesMemoryExhaustion(t *testing.T) {
	img := guestImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	inst, err := Start(ctx, Config{Name: "oom", CPUs: 1, MemoryKiB: SafeMemoryKiB(128 * 1024),
		Disks: []Disk{{Path: overlay(t, img), Format: "qcow2"}}, RunDir: dir})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer inst.Kill()
	log := filepath.Join(dir, SerialLogName)
	f := NewSerialFollower(log)
	heartbeat := func() int64 { f.Poll(); n, _, _ := f.Heartbeat(); return n }
	waitFor(t, 90*time.Second, "CNT 2", func() bool { return heartbeat() >= 2 })

	sendConsole(t, dir, "dirty 64", "ERR dirty 64 MiB does not fit")
	// 80 MiB of anonymous memory in one buffer: more than the guest has left.
	sendConsole(t, dir, "run dd if=/dev/zero of=/dev/null bs=80M count=1", "RUN done")
	if b := tail(log); !strings.Contains(b, "Out of memory: Killed process") || !strings.Contains(b, "(dd)") {
		t.Fatalf("the guest did not run out of memory, or the OOM killer took another process; serial log:\n%s", b)
	}
	n := heartbeat()
	waitFor(t, 30*time.Second, "two more heartbeats after the OOM kill", func() bool { return heartbeat() >= n+2 })
	if strings.Contains(tail(log), "(init)") {
		t.Errorf("the OOM killer took one of the guest's own loops; serial log:\n%s", tail(log))
	}
}

func tail(path string) string {
	b, _ := logTail(path, 8192, 60)
	return string(b)
}
