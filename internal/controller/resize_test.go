package controller_test

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// setDiskSize edits a disk's persistentVolumeClaim.size as a user would.
func setDiskSize(t *testing.T, ns, name, size string) error {
	t.Helper()
	vd := &v1alpha2.VirtualDisk{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vd); err != nil {
		t.Fatal(err)
	}
	orig := vd.DeepCopy()
	q := resource.MustParse(size)
	vd.Spec.PersistentVolumeClaim.Size = &q
	return k8s.Patch(ctx, vd, client.MergeFrom(orig))
}

// waitResized waits for the disk's file to be want bytes and its Resizing condition to
// be False with reason Resized.
func waitResized(t *testing.T, ns, name string, want int64) *v1alpha2.VirtualDisk {
	t.Helper()
	vd := &v1alpha2.VirtualDisk{}
	eventually(t, timeout, fmt.Sprintf("disk %s grown to %d", name, want), func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vd)
		c := meta.FindStatusCondition(vd.Status.Conditions, v1alpha2.DiskConditionResizing)
		ok := c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha2.ReasonResized &&
			vd.Status.Capacity == resource.NewQuantity(want, resource.BinarySI).String() && vd.Status.Phase == v1alpha2.ImageReady
		return ok, fmt.Sprintf("%s %s %+v", vd.Status.Phase, vd.Status.Capacity, c)
	})
	if size, _ := qemuInfo(t, vd.Status.Path); size != want {
		t.Errorf("the disk's file is %d bytes, want %d", size, want)
	}
	return vd
}

// TestDiskResize: a larger persistentVolumeClaim.size grows the disk's file; a smaller
// one is refused by the CRD's rule with a message that says why; while a VM holds the
// disk and is not stopped, the growth waits (and says so) and happens once the VM is
// gone.
func TestDiskResize(t *testing.T) {
	ns := newNamespace(t)
	vd := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "data"}}
	q := resource.MustParse("16Mi")
	vd.Spec.PersistentVolumeClaim.Size = &q
	createAll(t, vd)
	waitDisk(t, ns, "data", v1alpha2.ImageReady)
	if err := setDiskSize(t, ns, "data", "32Mi"); err != nil {
		t.Fatal(err)
	}
	waitResized(t, ns, "data", 32<<20)
	if err := setDiskSize(t, ns, "data", "8Mi"); err == nil || !strings.Contains(err.Error(), "cannot be made smaller") {
		t.Errorf("shrinking a disk was not refused: %v", err)
	}

	createAll(t, newVM(ns, "vm", "data", ""))
	waitPod(t, ns, "vm")
	if err := setDiskSize(t, ns, "data", "48Mi"); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the growth waits for the VM", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(vd), vd)
		c := meta.FindStatusCondition(vd.Status.Conditions, v1alpha2.DiskConditionResizing)
		if c == nil {
			return false, "no condition"
		}
		return c.Status == metav1.ConditionTrue && c.Reason == v1alpha2.ReasonResizeInProgress && strings.Contains(c.Message, "VM vm stops") && vd.Status.Capacity == "32Mi", c.Message
	})
	if size, _ := qemuInfo(t, vd.Status.Path); size != 32<<20 {
		t.Errorf("the disk grew under a VM that may run from it: %d bytes", size)
	}
	deleteVM(t, ns, "vm")
	waitResized(t, ns, "data", 48<<20)
}
