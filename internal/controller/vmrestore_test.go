package controller_test

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/restore"
)

func newRestore(ns, name, vm, snap string, mode v1alpha2.SnapshotOperationMode) *v1alpha2.VirtualMachineOperation {
	op := newOp(ns, name, vm, v1alpha2.OpRestore)
	op.Spec.Restore = &v1alpha2.RestoreSpec{Mode: mode, VirtualMachineSnapshotName: snap}
	return op
}

func resourceLines(op *v1alpha2.VirtualMachineOperation) string {
	var out []string
	for _, r := range op.Status.Resources {
		out = append(out, fmt.Sprintf("%s/%s %s: %s", r.Kind, r.Name, r.Status, r.Message))
	}
	return strings.Join(out, "\n")
}

func diskUID(t *testing.T, ns, name string) string {
	t.Helper()
	d := &v1alpha2.VirtualDisk{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		t.Fatal(err)
	}
	return string(d.UID)
}

// TestVMRestore: a VM whose disks and spec changed after its snapshot is put back. A
// DryRun reports each disk and the VM in status.resources and changes nothing; a Restore of
// a running VM fails at once and leaves it running; a Strict restore of the stopped VM
// makes each disk again from its disk snapshot (the data written after the snapshot is
// gone, the data before it is back) and sets the spec back. Bad input is refused.
func TestVMRestore(t *testing.T) {
	ns := newNamespace(t)
	root, data := twoDiskVM(t, ns, "vm", v1alpha2.Manual)
	createAll(t, newVMSnapshot(ns, "snap", "vm", true, v1alpha2.KeepIPAddressAlways))
	waitVMSnapshot(t, ns, "snap", v1alpha2.VMSnapshotReady, v1alpha2.ReasonVMSnapshotReady)

	// After the snapshot: new data on both disks, more memory.
	if err := qemuIO(t, root.Status.Path, "write -P 0x99 512k 64k"); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, data.Status.Path, "write -P 0x98 1M 64k"); err != nil {
		t.Fatal(err)
	}
	vm := getVM(t, ns, "vm")
	patch := client.MergeFrom(vm.DeepCopy())
	vm.Spec.Memory.Size = resource.MustParse("256Mi")
	if err := k8s.Patch(ctx, vm, patch); err != nil {
		t.Fatal(err)
	}

	// DryRun: the plan, nothing changed.
	dry := newRestore(ns, "dry", "vm", "snap", v1alpha2.ModeDryRun)
	createAll(t, dry)
	waitOp(t, dry, v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted)
	lines := resourceLines(dry)
	for _, want := range []string{
		"VirtualDisk/vm-root Completed: would be deleted and made again from VirtualDiskSnapshot snap-vm-root",
		"VirtualDisk/vm-data Completed: would be deleted and made again from VirtualDiskSnapshot snap-vm-data",
		"VirtualMachine/vm Completed: its spec would be set back to the snapshot's",
		"VirtualMachineIPAddress/" + vm.Status.VirtualMachineIPAddressName + " Completed: kept",
	} {
		if !strings.Contains(lines, want) {
			t.Errorf("DryRun's status.resources lacks %q:\n%s", want, lines)
		}
	}
	if diskUID(t, ns, "vm-root") != string(root.UID) || getVM(t, ns, "vm").Spec.Memory.Size.String() != "256Mi" {
		t.Errorf("DryRun changed the disk or the VM")
	}
	if err := qemuIO(t, root.Status.Path, "read -P 0x99 512k 64k"); err != nil {
		t.Errorf("DryRun changed the disk's data: %v", err)
	}

	// A running VM is not restored, and keeps running.
	createAll(t, newOp(ns, "start", "vm", v1alpha2.OpStart))
	pod := waitPod(t, ns, "vm")
	runPod(t, &pod, "n1")
	waitPhase(t, ns, "vm", v1alpha2.MachineRunning)
	running := newRestore(ns, "while-running", "vm", "snap", v1alpha2.ModeStrict)
	createAll(t, running)
	waitOp(t, running, v1alpha2.OpFailed, v1alpha2.ReasonNotApplicableState)
	if _, msg := running.Outcome(); !strings.Contains(msg, "needs it Stopped") || !strings.Contains(msg, "nothing was changed") {
		t.Errorf("a restore of a running VM says %q", msg)
	}
	if waitPhase(t, ns, "vm", v1alpha2.MachineRunning); diskUID(t, ns, "vm-root") != string(root.UID) {
		t.Errorf("a refused restore changed the disk")
	}
	setPodStatus(t, &pod, corev1.PodFailed, false)
	waitPhase(t, ns, "vm", v1alpha2.MachineStopped)

	// Strict: the disks made again, the spec back.
	op := newRestore(ns, "restore", "vm", "snap", v1alpha2.ModeStrict)
	createAll(t, op)
	waitOp(t, op, v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted)
	t.Logf("restore's status.resources:\n%s", resourceLines(op))
	for _, c := range []struct{ disk, want, gone string }{
		{"vm-root", "read -P 0x21 512k 64k", "read -P 0x99 512k 64k"},
		{"vm-data", "read -P 0x31 1M 64k", "read -P 0x98 1M 64k"},
	} {
		d := waitDisk(t, ns, c.disk, v1alpha2.ImageReady)
		ref := d.Spec.DataSource
		if d.Annotations[restore.AnnotationRestoredBy] != string(op.UID) || ref == nil || ref.ObjectRef == nil ||
			ref.ObjectRef.Kind != v1alpha2.VirtualDiskSnapshotKind || ref.ObjectRef.Name != "snap-"+c.disk {
			t.Errorf("disk %s after the restore: annotations %v, dataSource %+v", c.disk, d.Annotations, ref)
		}
		if err := qemuIO(t, d.Status.Path, c.want); err != nil {
			t.Errorf("disk %s lacks the data of the snapshot: %v", c.disk, err)
		}
		if err := qemuIO(t, d.Status.Path, c.gone); err == nil {
			t.Errorf("disk %s still holds the data written after the snapshot", c.disk)
		}
	}
	if d := waitDisk(t, ns, "vm-data", v1alpha2.ImageReady); d.Status.Capacity != "8Mi" {
		t.Errorf("the restored data disk has capacity %s, want 8Mi", d.Status.Capacity)
	}
	vm = getVM(t, ns, "vm")
	if vm.Spec.Memory.Size.String() != "128Mi" || len(vm.Spec.BlockDeviceRefs) != 2 || vm.Spec.RunPolicy != v1alpha2.Manual {
		t.Errorf("the VM's spec after the restore: %+v", vm.Spec)
	}
	// The restored VM starts and runs on its restored disks.
	createAll(t, newOp(ns, "start-again", "vm", v1alpha2.OpStart))
	pod = waitPod(t, ns, "vm")
	runPod(t, &pod, "n1")
	waitPhase(t, ns, "vm", v1alpha2.MachineRunning)
	setPodStatus(t, &pod, corev1.PodFailed, false)
	waitPhase(t, ns, "vm", v1alpha2.MachineStopped)

	// Operations that cannot apply fail with what is wrong, changing nothing.
	createAll(t, newVMSnapshot(ns, "ghost-snap", "ghost", true, v1alpha2.KeepIPAddressNever))
	uid := diskUID(t, ns, "vm-root")
	for _, c := range []struct {
		op    *v1alpha2.VirtualMachineOperation
		words string
	}{
		{newRestore(ns, "missing", "vm", "nope", v1alpha2.ModeStrict), "VirtualMachineSnapshot nope not found"},
		{newRestore(ns, "other-vm", "vm", "ghost-snap", v1alpha2.ModeStrict), "a snapshot of VM ghost, not of vm"},
	} {
		createAll(t, c.op)
		waitOp(t, c.op, v1alpha2.OpFailed, v1alpha2.ReasonOperationFailed)
		if _, msg := c.op.Outcome(); !strings.Contains(msg, c.words) {
			t.Errorf("%s says %q, want %q", c.op.Name, msg, c.words)
		}
	}
	if diskUID(t, ns, "vm-root") != uid {
		t.Errorf("a failed restore changed the disk")
	}

	// Bad input: CEL and enum messages.
	noField := newOp(ns, "no-field", "vm", v1alpha2.OpRestore)
	wrongType := newOp(ns, "wrong-type", "vm", v1alpha2.OpStart)
	wrongType.Spec.Restore = &v1alpha2.RestoreSpec{Mode: v1alpha2.ModeStrict, VirtualMachineSnapshotName: "snap"}
	badMode := newRestore(ns, "bad-mode", "vm", "snap", "Gently")
	noSnap := newRestore(ns, "no-snap", "vm", "", v1alpha2.ModeStrict)
	noClone := newOp(ns, "no-clone", "vm", v1alpha2.OpClone)
	noNames := newOp(ns, "no-names", "vm", v1alpha2.OpClone)
	noNames.Spec.Clone = &v1alpha2.CloneSpec{Mode: v1alpha2.ModeStrict}
	longName := newOp(ns, "long-name", "vm", v1alpha2.OpClone)
	longName.Spec.Clone = &v1alpha2.CloneSpec{Mode: v1alpha2.ModeStrict, NameReplacement: []v1alpha2.NameReplacement{
		{From: v1alpha2.NameReplacementFrom{Kind: "VirtualMachine", Name: "vm"}, To: strings.Repeat("x", 60)}}}
	for _, c := range []struct {
		op    *v1alpha2.VirtualMachineOperation
		words string
	}{
		{noField, "Restore requires restore field."},
		{wrongType, "spec.restore is only allowed with type Restore"},
		{badMode, `Unsupported value: "Gently"`},
		{noSnap, "virtualMachineSnapshotName"},
		{noClone, "Clone requires clone field."},
		{noNames, "a clone needs new names"},
		{longName, "Each nameReplacement.to must be between 1 and 59 characters"},
	} {
		if err := k8s.Create(ctx, c.op); err == nil || !strings.Contains(err.Error(), c.words) {
			t.Errorf("vmop %s was not refused with %q: %v", c.op.Name, c.words, err)
		}
	}
	_ = metav1.Now
}
