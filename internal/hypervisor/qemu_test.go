package hypervisor

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/guestimage"
)

const setupHint = "run: apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils " +
	"linux-image-cloud-amd64 busybox-static dosfstools mtools syslinux syslinux-common fdisk cpio"

var (
	guestOnce sync.Once
	guestPath string
	guestErr  error
)

// guestImage builds (once, cached in guestimage.CacheDir()) the test guest image and
// returns its path. Missing QEMU fails the test rather than skipping it.
func guestImage(t *testing.T) string {
	t.Helper()
	for _, bin := range []string{DefaultBinary, "qemu-img"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found; %s", bin, setupHint)
		}
	}
	guestOnce.Do(func() {
		guestPath, guestErr = guestimage.EnsureCached(context.Background())
	})
	if guestErr != nil {
		t.Fatalf("building guest image: %v; %s", guestErr, setupHint)
	}
	return guestPath
}

func overlay(t *testing.T, base string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.qcow2")
	out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", p).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	return p
}

// waitFor polls cond every 50ms until it returns true or d elapses.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// sendConsole types line on the serial console and keeps the connection
// open until expect shows up in the serial log (QEMU drops input still
// queued when a client hangs up). It reads what the guest prints meanwhile:
// QEMU sends each byte to the client on its own, and a client that reads
// nothing fills its socket after a few hundred and stalls the guest's UART.
func sendConsole(t *testing.T, runDir, line, expect string) {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(runDir, SerialSocketName))
	if err != nil {
		t.Fatalf("console: %v", err)
	}
	defer c.Close()
	go io.Copy(io.Discard, c)
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("console write: %v", err)
	}
	waitFor(t, 30*time.Second, expect, func() bool {
		return logContains(filepath.Join(runDir, SerialLogName), expect)
	})
}

func logContains(path, s string) bool {
	b, _ := os.ReadFile(path)
	return strings.Contains(string(b), s)
}

func TestBootAndLiveMigration(t *testing.T) {
	img := guestImage(t)
	disk := overlay(t, img)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	srcDir, dstDir := filepath.Join(dir, "src"), filepath.Join(dir, "dst")

	t0 := time.Now()
	src, err := Start(ctx, Config{Name: "src", CPUs: 1, MemoryKiB: SafeMemoryKiB(128 * 1024),
		Disks: []Disk{{Path: disk, Format: "qcow2"}}, RunDir: srcDir})
	if err != nil {
		t.Fatalf("Start source: %v", err)
	}
	defer src.Kill()
	if !strings.Contains(strings.Join(src.Args(), " "), "-m 131064K") {
		t.Errorf("args lack -m 131064K: %v", src.Args())
	}
	t.Logf("source pid %d accel %s, QMP ready after %v", src.PID(), src.Accel(), time.Since(t0))

	srcF := NewSerialFollower(filepath.Join(srcDir, SerialLogName))
	first := waitFor(t, 90*time.Second, "CNT 1 on source", func() bool {
		srcF.Poll()
		_, _, ok := srcF.Heartbeat()
		return ok
	})
	t.Logf("boot to first CNT: %v (since Start: %v)", first, time.Since(t0))
	waitFor(t, 60*time.Second, "CNT 3 on source", func() bool {
		srcF.Poll()
		n, _, _ := srcF.Heartbeat()
		return n >= 3
	})
	if !srcF.Booted() {
		t.Error("source never printed the boot line")
	}
	if st, err := src.Status(ctx); err != nil || st != "running" {
		t.Fatalf("source status %q, %v", st, err)
	}

	// Dirty some guest memory so the migration has real work.
	sendConsole(t, srcDir, "dirty 32", "DIRTY 32 STARTED")

	// The destination opens the same overlay: -incoming keeps it inactive
	// (no write lock) until the migration hands it over.
	dst, err := Start(ctx, Config{Name: "dst", CPUs: 1, MemoryKiB: SafeMemoryKiB(128 * 1024),
		Disks: []Disk{{Path: disk, Format: "qcow2"}}, RunDir: dstDir, Incoming: true})
	if err != nil {
		t.Fatalf("Start destination: %v", err)
	}
	defer dst.Kill()
	if st, err := dst.Status(ctx); err != nil || st != "inmigrate" {
		t.Fatalf("destination status %q, %v", st, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	uri := "tcp:127.0.0.1:" + strconv.Itoa(port)
	if err := dst.PrepareIncoming(ctx, uri, nil); err != nil {
		t.Fatalf("PrepareIncoming: %v", err)
	}

	srcF.Poll()
	before, _, _ := srcF.Heartbeat()
	p := MigrationParams{MaxBandwidth: 1 << 30, DowntimeLimit: 300 * time.Millisecond, AutoConverge: true}
	if err := src.MigrateOut(ctx, uri, p); err != nil {
		t.Fatalf("MigrateOut: %v", err)
	}
	mctx, mcancel := context.WithTimeout(ctx, 90*time.Second)
	info, err := src.WaitMigration(mctx, 20*time.Millisecond)
	mcancel()
	if err != nil {
		src.CancelMigration(ctx)
		t.Fatalf("migration: %v (%+v)", err, info)
	}
	t.Logf("migration %s: total %v, downtime %v, setup %v, transferred %d MiB of %d MiB, %.0f Mbps, dirty syncs %d, throttle %d%%",
		info.Status, info.TotalTime, info.Downtime, info.SetupTime, info.RAMTransferred>>20, info.RAMTotal>>20,
		info.Mbps, info.DirtySyncCount, info.CPUThrottle)

	if st, err := src.Status(ctx); err != nil || st != "postmigrate" {
		t.Errorf("source status after migration %q, %v", st, err)
	}
	srcF.Poll()
	last, _, _ := srcF.Heartbeat()
	t.Logf("last source CNT %d (was %d when migration started)", last, before)

	waitFor(t, 30*time.Second, "destination running", func() bool {
		st, err := dst.Status(ctx)
		return err == nil && st == "running"
	})
	dstF := NewSerialFollower(filepath.Join(dstDir, SerialLogName))
	waitFor(t, 60*time.Second, "destination CNT > last source CNT", func() bool {
		dstF.Poll()
		n, _, ok := dstF.Heartbeat()
		return ok && n > last
	})
	waitFor(t, 30*time.Second, "two more destination heartbeats", func() bool {
		dstF.Poll()
		n, _, _ := dstF.Heartbeat()
		return n > last+2
	})
	dstF.Poll()
	n, _, _ := dstF.Heartbeat()
	t.Logf("destination CNT %d", n)
	if dstF.Booted() {
		t.Error("destination printed FERRY-GUEST BOOTED: the guest rebooted instead of migrating")
	}
	// Source quits (postmigrate: no powerdown); Wait reports a requested exit.
	if err := src.Shutdown(ctx, 5*time.Second); err != nil {
		t.Errorf("source Shutdown: %v", err)
	}
	if g, err := src.Wait(); g || err != nil {
		t.Errorf("source Wait = %v, %v; want false, nil", g, err)
	}
	// Destination powers off through ACPI (acpid in the guest).
	t1 := time.Now()
	if err := dst.Shutdown(ctx, 30*time.Second); err != nil {
		t.Errorf("destination Shutdown: %v", err)
	}
	if g, err := dst.Wait(); !g || err != nil {
		t.Errorf("destination Wait = %v, %v; want true, nil", g, err)
	}
	t.Logf("destination ACPI shutdown took %v", time.Since(t1))
}

func TestQEMUDiesUnexpectedly(t *testing.T) {
	img := guestImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := Start(ctx, Config{Name: "crash", MemoryKiB: 131064,
		Disks: []Disk{{Path: img, Format: "raw", ReadOnly: true}}, RunDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer inst.Kill()
	syscall.Kill(inst.PID(), syscall.SIGKILL) // not through the Instance
	g, err := inst.Wait()
	var ee *ExitError
	if g || !errors.As(err, &ee) || !strings.Contains(ee.State, "killed") {
		t.Fatalf("Wait = %v, %v; want false, *ExitError(killed)", g, err)
	}
}

func TestStartRejectsBrokenDisk(t *testing.T) {
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Fatalf("%s not found; %s", DefaultBinary, setupHint)
	}
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.img")
	os.WriteFile(garbage, []byte(strings.Repeat("not a disk image ", 1000)), 0o644)
	// qcow2 magic followed by junk: only QEMU itself can tell.
	badQcow := filepath.Join(dir, "bad.qcow2")
	os.WriteFile(badQcow, append([]byte{'Q', 'F', 'I', 0xfb}, []byte(strings.Repeat("x", 4096))...), 0o644)
	for _, d := range []Disk{
		{Path: badQcow},
		{Path: garbage},
		{Path: garbage, Format: "qcow2"},
		{Path: filepath.Join(dir, "missing.img")},
	} {
		_, err := Start(context.Background(), Config{Disks: []Disk{d}, RunDir: filepath.Join(dir, "run")})
		if err == nil || !strings.Contains(err.Error(), d.Path) {
			t.Errorf("Start(%+v) = %v; want an error naming the image", d, err)
		} else {
			t.Log(err)
		}
	}
}

func TestSafeMemoryKiB(t *testing.T) {
	for in, want := range map[int64]int64{131072: 131064, 131064: 131064, 1 << 20: 1<<20 - 8, 100000: 100000} {
		if got := SafeMemoryKiB(in); got != want {
			t.Errorf("SafeMemoryKiB(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestImageLockingRejectsSecondWriter(t *testing.T) {
	img := guestImage(t)
	disk := overlay(t, img)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, err := Start(ctx, Config{Name: "a", MemoryKiB: 131064, Disks: []Disk{{Path: disk}}, RunDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Start a: %v", err)
	}
	defer func() { a.Kill(); a.Wait() }()
	_, err = Start(ctx, Config{Name: "b", MemoryKiB: 131064, Disks: []Disk{{Path: disk}}, RunDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "lock") {
		t.Fatalf("second writer: %v; want a lock error", err)
	}
	t.Log(err)
}
