package launcher

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// consoleAfter types line on the guest's console and returns the first match of re in
// what the serial log shows after it was typed.
func consoleAfter(t *testing.T, runDir, line string, re *regexp.Regexp) []string {
	t.Helper()
	logPath := filepath.Join(runDir, hypervisor.SerialLogName)
	before, _ := os.ReadFile(logPath)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out syncBuffer
	if err := hypervisor.Console(ctx, runDir, strings.NewReader(line+"\n"), &out); err != nil {
		t.Fatalf("console: %v", err)
	}
	var m []string
	waitUntil(t, 30*time.Second, re.String()+" after typing "+line, func() bool {
		b, _ := os.ReadFile(logPath)
		if len(b) < len(before) {
			return false
		}
		m = re.FindStringSubmatch(string(b[len(before):]))
		return m != nil
	})
	return m
}

// guestDisk returns the guest's device name of the virtio disk with serial, "" if none:
// from the tiny guest's "disks" command.
func guestDisk(t *testing.T, runDir, serial string) string {
	t.Helper()
	m := consoleAfter(t, runDir, "disks", regexp.MustCompile(`DISKS([^\r\n]*)\r?\n`))
	for _, f := range strings.Fields(m[1]) {
		p := strings.Split(f, ":")
		if len(p) == 3 && p[1] == serial {
			return p[0]
		}
	}
	return ""
}

// dataDisk writes a qcow2 disk under root whose first sector starts with marker.
func dataDisk(t *testing.T, root, marker string) string {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "data.raw")
	b := make([]byte, 16<<20)
	copy(b, marker)
	if err := os.WriteFile(raw, b, 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "disks", "data.qcow2")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, p).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	return p
}

// TestHotplugDiskMigratesWithTheGuest: a qcow2 hot-plugged into a running guest shows up
// in it (as a virtio disk with its serial) with its data; the guest writes to it; a
// migration to a target started with the same hot-plugged disk keeps it in the guest with
// both the data and the guest's write; unplugged on the target, it leaves the guest, and
// the guest's write is in the file.
func TestHotplugDiskMigratesWithTheGuest(t *testing.T) {
	img := guestImage(t)
	boot := overlay(t, img) + ":qcow2"
	root := t.TempDir()
	const marker = "FERRY-HOTPLUG-MARKER"
	data := dataDisk(t, root, marker)

	src, srcDir := startVM(t, Options{VMName: "hp", Namespace: "default", Memory: "128Mi", Disks: []string{boot}, HotplugRoot: root})
	pollStatus(t, src, srcDir, 90*time.Second, "source heartbeat >= 3", func(s Status) bool { return s.Heartbeat >= 3 })
	// virtio_blk is loaded in the background at boot: the boot disk shows once it is.
	waitUntil(t, 30*time.Second, "the guest's virtio disks", func() bool { return guestDisk(t, srcDir, "") != "" })

	ctx := context.Background() // each call below has its own timeout: a dead launcher socket fails at once
	// A file outside the hot-plug root is refused before QEMU hears of it.
	outside := filepath.Join(t.TempDir(), "x.qcow2")
	if err := SetBlockDevices(ctx, srcDir, []BlockDevice{{Slot: 0x1f, Name: "x", Path: outside, Format: "qcow2"}}); err == nil || !strings.Contains(err.Error(), "not under the hot-plug root") {
		t.Fatalf("a disk outside the root: %v", err)
	}
	dev := BlockDevice{Slot: 0x1f, Name: "data", Path: data, Format: "qcow2"}
	t0 := time.Now()
	if err := SetBlockDevices(ctx, srcDir, []BlockDevice{dev}); err != nil {
		t.Fatal(err)
	}
	st := pollStatus(t, src, srcDir, 30*time.Second, "the disk attached", func(s Status) bool {
		return len(s.BlockDevices) == 1 && s.BlockDevices[0].State != BlockAttaching
	})
	if b := st.BlockDevices[0]; b.State != BlockAttached || b.Target != "hotplug-1f" || b.BlockDevice != dev {
		t.Fatalf("block device %+v; log:\n%s", b, src.log)
	}
	var vd string
	waitUntil(t, 30*time.Second, "the disk in the guest", func() bool {
		vd = guestDisk(t, srcDir, "hotplug-1f")
		return vd != ""
	})
	t.Logf("attached in %v; the guest sees /dev/%s", time.Since(t0), vd)
	got := consoleAfter(t, srcDir, "run dd if=/dev/"+vd+" bs=512 count=1 iflag=direct 2>/dev/null | head -c 20; echo",
		regexp.MustCompile(`OUT (\S*)\r?\n`))
	if got[1] != marker {
		t.Fatalf("the guest read %q from the disk, want %q", got[1], marker)
	}
	const wrote = "GUEST-WROTE-42"
	consoleAfter(t, srcDir, "run echo "+wrote+" | dd of=/dev/"+vd+" bs=512 seek=1 conv=sync,notrunc,fsync 2>/dev/null; echo WRITE-DONE",
		regexp.MustCompile(`OUT WRITE-DONE`))

	// The target starts with the disk at the same slot. A migration request that names
	// other hot-plugged disks than the VM has is refused, and the guest stays.
	dst, dstDir := startVM(t, Options{VMName: "hp", Namespace: "default", Memory: "128Mi", Disks: []string{boot}, Incoming: true,
		HotplugRoot: root, HotplugDisks: []string{HotplugDiskArg(dev)}})
	dstSt := pollStatus(t, dst, dstDir, 60*time.Second, "target incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	if len(dstSt.BlockDevices) != 1 || dstSt.BlockDevices[0].State != BlockAttached {
		t.Fatalf("target block devices %+v", dstSt.BlockDevices)
	}
	if err := SetBlockDevices(ctx, dstDir, nil); err == nil || !strings.Contains(err.Error(), "incoming migration") {
		t.Errorf("hot-plug on a waiting target: %v", err)
	}
	if err := StartMigration(ctx, srcDir, MigrationRequest{URI: dstSt.IncomingURI}); err == nil || !strings.Contains(err.Error(), "hot-plugged disks none") {
		t.Fatalf("a migration to a target without the disk: %v", err)
	}
	if err := StartMigration(ctx, srcDir, MigrationRequest{URI: dstSt.IncomingURI, BlockDevices: []MigrationBlockDevice{{Slot: dev.Slot, Path: dev.Path}}}); err != nil {
		t.Fatalf("StartMigration: %v", err)
	}
	if err := SetBlockDevices(ctx, srcDir, nil); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("hot-unplug during the migration: %v", err)
	}
	if code := src.wait(t, 3*time.Minute); code != ExitMigrated {
		t.Fatalf("source exit code %d; log:\n%s", code, src.log)
	}
	last := lastCNT(srcDir)
	pollStatus(t, dst, dstDir, 60*time.Second, "target running on", func(s Status) bool { return s.QEMU == "running" && s.Heartbeat > last })

	// On the target: the same disk, its data and the guest's write (read past the guest's
	// page cache).
	if d := guestDisk(t, dstDir, "hotplug-1f"); d != vd {
		t.Fatalf("after the migration the guest has the disk as %q, want %q", d, vd)
	}
	got = consoleAfter(t, dstDir, "run dd if=/dev/"+vd+" bs=512 count=1 iflag=direct 2>/dev/null | head -c 20; echo",
		regexp.MustCompile(`OUT (\S*)\r?\n`))
	if got[1] != marker {
		t.Errorf("after the migration the guest read %q, want %q", got[1], marker)
	}
	got = consoleAfter(t, dstDir, "run dd if=/dev/"+vd+" bs=512 skip=1 count=1 iflag=direct 2>/dev/null | head -c 14; echo",
		regexp.MustCompile(`OUT (\S*)\r?\n`))
	if got[1] != wrote {
		t.Errorf("after the migration the guest read %q where it wrote %q", got[1], wrote)
	}

	// Unplugged on the target: gone from QEMU, then from the guest.
	if err := SetBlockDevices(ctx, dstDir, nil); err != nil {
		t.Fatal(err)
	}
	pollStatus(t, dst, dstDir, 90*time.Second, "the disk detached", func(s Status) bool { return len(s.BlockDevices) == 0 })
	waitUntil(t, 30*time.Second, "the disk gone from the guest", func() bool { return guestDisk(t, dstDir, "hotplug-1f") == "" })
	if !strings.Contains(dst.log.String(), "hot-unplugged disk data") {
		t.Errorf("target log lacks the unplug:\n%s", dst.log)
	}
	// The guest's write reached the file (no QEMU holds it any more).
	raw := filepath.Join(t.TempDir(), "back.raw")
	if out, err := exec.Command("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", data, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	b, _ := os.ReadFile(raw)
	if len(b) < 1024 || !bytes.HasPrefix(b, []byte(marker)) || !bytes.HasPrefix(b[512:], []byte(wrote)) {
		t.Errorf("the disk file lacks the marker or the guest's write")
	}
	t.Logf("source:\n%s\ntarget:\n%s", src.log, dst.log)
}
