package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// The USER_GUIDE's attachment of a blank disk, but for the names.
const hotplugDisk = `
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualDisk
metadata:
  name: hp-blank
spec:
  persistentVolumeClaim:
    size: 64Mi
---
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachineBlockDeviceAttachment
metadata:
  name: attach-blank-disk
spec:
  blockDeviceRef:
    kind: VirtualDisk
    name: hp-blank
  virtualMachineName: hp
`

func getAttachment(t *testing.T, name string) (*v1alpha2.VirtualMachineBlockDeviceAttachment, error) {
	t.Helper()
	a := &v1alpha2.VirtualMachineBlockDeviceAttachment{}
	err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, a)
	return a, err
}

func waitAttached(t *testing.T, name string) {
	t.Helper()
	eventually(t, 2*time.Minute, "attachment "+name+" Attached", func() (bool, string) {
		a, err := getAttachment(t, name)
		if err != nil {
			return false, err.Error()
		}
		return a.Status.Phase == v1alpha2.BlockDeviceAttachmentAttached, fmt.Sprintf("%s %+v", a.Status.Phase, a.Status.Conditions)
	})
}

// guestHotplugDisk asks the tiny guest for its disks and returns the name of the one with
// the hot-plugged serial, and its size in sectors ("" when the guest has none).
func guestHotplugDisk(t *testing.T, vm string) (string, string) {
	t.Helper()
	m := typeOnConsole(t, vm, "disks", regexp.MustCompile(`DISKS([^\r\n]*)`), time.Minute)
	for _, f := range strings.Fields(m[1]) {
		if p := strings.Split(f, ":"); len(p) == 3 && p[1] == "hotplug-1f" {
			return p[0], p[2]
		}
	}
	return "", ""
}

// TestHotplugDiskSurvivesEviction: the USER_GUIDE's attachment of a blank disk to a running
// VM. The guest sees the disk (its serial is the device's QEMU name) and writes to it; the
// VM is evicted live to another node; the guest still has the disk there, with what it
// wrote, without a reboot. Deleting the attachment takes the disk out of the guest.
func TestHotplugDiskSurvivesEviction(t *testing.T) {
	apply(t, fmt.Sprintf(pinnedVM, "hp", ""))
	t.Cleanup(func() {
		_, _ = ferry(t, "k", "delete", "vmbda", "attach-blank-disk", "--wait=true", "--timeout=2m", "--ignore-not-found")
		deleteVM(t, "hp")
		_, _ = ferry(t, "k", "delete", "vd", "hp-blank", "--wait=true", "--timeout=1m", "--ignore-not-found")
	})
	before := waitRunning(t, "hp", 2*time.Minute)
	waitHeartbeat(t, "hp", 2, time.Minute)

	t0 := time.Now()
	apply(t, hotplugDisk)
	waitAttached(t, "attach-blank-disk")
	t.Logf("attached %v after the apply", time.Since(t0))
	// The USER_GUIDE's `d8 k get vmbda attach-blank-disk`.
	out := mustFerry(t, "k", "get", "vmbda", "attach-blank-disk")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 ||
		strings.Join(strings.Fields(lines[0]), " ") != "NAME PHASE VIRTUALMACHINE AGE" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "attach-blank-disk Attached hp ") {
		t.Errorf("kubectl get vmbda:\n%s", out)
	}
	var dev, size string
	eventually(t, time.Minute, "the disk in the guest", func() (bool, string) {
		dev, size = guestHotplugDisk(t, "hp")
		return dev != "", "no disk with serial hotplug-1f"
	})
	if size != "131072" {
		t.Errorf("the guest sees %s sectors, want 131072 (64Mi)", size)
	}
	const mark = "E2E-HOTPLUG-OK"
	typeOnConsole(t, "hp", "run echo "+mark+" | dd of=/dev/"+dev+" bs=512 conv=sync,notrunc,fsync 2>/dev/null; echo WRITE-DONE",
		regexp.MustCompile(`OUT WRITE-DONE`), time.Minute)
	vm := getVM(t, "hp")
	if refs := vm.Status.BlockDeviceRefs; len(refs) != 2 || !refs[1].Hotplugged || !refs[1].Attached || refs[1].VirtualMachineBlockDeviceAttachmentName != "attach-blank-disk" || refs[1].Target != "hotplug-1f" {
		t.Errorf("status.blockDeviceRefs %+v", refs)
	}

	last := waitHeartbeat(t, "hp", 0, time.Minute)
	op := newEvict(t, "hp")
	if got, reason := waitOpEnd(t, op, v1alpha2.OpCompleted); got.Status.Phase != v1alpha2.OpCompleted {
		t.Fatalf("evict: %s %s", got.Status.Phase, reason)
	}
	after := waitRunning(t, "hp", time.Minute)
	if after.Status.NodeName == before.Status.NodeName {
		t.Fatalf("still on %s after the eviction", after.Status.NodeName)
	}
	assertContinued(t, "hp", last)
	waitAttached(t, "attach-blank-disk")
	if d, _ := guestHotplugDisk(t, "hp"); d != dev {
		t.Fatalf("on node %s the guest has the disk as %q, want %q", after.Status.NodeName, d, dev)
	}
	m := typeOnConsole(t, "hp", "run dd if=/dev/"+dev+" bs=512 count=1 iflag=direct 2>/dev/null | head -c 14; echo",
		regexp.MustCompile(`OUT (\S*)\r?\n`), time.Minute)
	if m[1] != mark {
		t.Errorf("after the eviction the guest read %q from the disk, want %q", m[1], mark)
	}
	t.Logf("the disk moved with the guest from %s to %s", before.Status.NodeName, after.Status.NodeName)

	// Detached: gone from the guest, the attachment gone.
	mustFerry(t, "k", "delete", "vmbda", "attach-blank-disk", "--wait=true", "--timeout=2m")
	if _, err := getAttachment(t, "attach-blank-disk"); !apierrors.IsNotFound(err) {
		t.Fatalf("attachment after its deletion: %v", err)
	}
	eventually(t, time.Minute, "the disk gone from the guest", func() (bool, string) {
		d, _ := guestHotplugDisk(t, "hp")
		return d == "", "still " + d
	})
}
