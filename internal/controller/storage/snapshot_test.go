package storage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// TestSnapshotCopyUnderRunningQEMU: a real QEMU holds a disk as a running VM does (image
// locking on, the disk on a virtio-blk device). The copy of a consistent snapshot, which
// must not read a disk a QEMU writes, is refused by QEMU's lock; the copy asked for with
// requiredConsistency false reads it anyway (-U), and is a standalone qcow2 with the
// disk's data that qemu-img check passes.
func TestSnapshotCopyUnderRunningQEMU(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	disk := filepath.Join(root, "disks", "ns", "d-1234.qcow2")
	if err := os.MkdirAll(filepath.Dir(disk), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", disk, "8M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 64k", disk).CombinedOutput(); err != nil {
		t.Fatalf("qemu-io write: %v: %s", err, out)
	}

	// Paused (-S): QEMU holds the disk open for writing, and spends no CPU on a guest.
	qemu := exec.Command("qemu-system-x86_64", "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none", "-S",
		"-blockdev", "driver=file,filename="+disk+",node-name=f0,locking=on",
		"-blockdev", "driver=qcow2,file=f0,node-name=d0", "-device", "virtio-blk-pci,drive=d0")
	var qemuOut lockedBuffer
	qemu.Stdout, qemu.Stderr = &qemuOut, &qemuOut
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- qemu.Wait() }()
	t.Cleanup(func() {
		_ = qemu.Process.Kill()
		<-exited
	})
	// Under a loaded CI machine QEMU's start has been seen to take long: wait for the lock
	// with a generous deadline, and stop at once, with QEMU's own words, if QEMU ends.
	var lastInfo string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
		select {
		case werr := <-exited:
			exited <- werr
			return false, fmt.Errorf("QEMU ended (%v): %s", werr, qemuOut.String())
		default:
		}
		// qemu-img info without -U fails once QEMU holds its lock.
		out, ierr := exec.Command("qemu-img", "info", "-f", "qcow2", disk).CombinedOutput()
		lastInfo = string(out)
		return ierr != nil && strings.Contains(lastInfo, "lock"), nil
	})
	if err != nil {
		t.Fatalf("QEMU did not take the disk's lock: %v\nQEMU printed: %s\nqemu-img info last printed: %s", err, qemuOut.String(), lastInfo)
	}

	consistent := filepath.Join(root, "snapshots", "ns", "consistent.qcow2")
	err = copySnapshot(ctx, root, disk, consistent, false)
	if err == nil || !strings.Contains(err.Error(), "lock") {
		t.Errorf("a consistent copy of a disk QEMU holds was not refused by its lock: %v", err)
	}
	if _, serr := os.Stat(consistent); !os.IsNotExist(serr) {
		t.Errorf("a refused copy left a file: %v", serr)
	}

	torn := filepath.Join(root, "snapshots", "ns", "torn.qcow2")
	if err := copySnapshot(ctx, root, disk, torn, true); err != nil {
		t.Fatalf("a copy with -U under a running QEMU: %v", err)
	}
	out, err := run(ctx, "qemu-img", "info", "-f", "qcow2", "--output=json", torn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseQemuInfo(out, FormatQcow2); err != nil {
		t.Errorf("the copy is not a standalone qcow2: %v", err)
	}
	if out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 1M 64k", torn).CombinedOutput(); err != nil || strings.Contains(string(out), "failed") {
		t.Errorf("the copy lacks the disk's data: %v: %s", err, out)
	}
}

// lockedBuffer collects a process's output, read while the process may still write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
