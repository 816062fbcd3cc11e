package controller_test

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/restore"
)

func newClone(ns, name, vm string, mode v1alpha2.SnapshotOperationMode, suffix string, repl ...v1alpha2.NameReplacement) *v1alpha2.VirtualMachineOperation {
	op := newOp(ns, name, vm, v1alpha2.OpClone)
	op.Spec.Clone = &v1alpha2.CloneSpec{Mode: mode, NameReplacement: repl}
	if suffix != "" {
		op.Spec.Clone.Customization = &v1alpha2.NameCustomization{NameSuffix: suffix}
	}
	return op
}

func replace(kind, from, to string) v1alpha2.NameReplacement {
	return v1alpha2.NameReplacement{From: v1alpha2.NameReplacementFrom{Kind: kind, Name: from}, To: to}
}

// TestVMClone: a Clone DryRun lists the VM and disks it would make and makes nothing; a
// Strict clone with nameReplacement makes new disks holding the source's data and a new
// VM naming them, without the source's labels and with an address of its own; the source
// is untouched. A clone whose names are taken fails, making nothing.
func TestVMClone(t *testing.T) {
	ns := newNamespace(t)
	root, data := twoDiskVM(t, ns, "src", v1alpha2.Manual)
	src := getVM(t, ns, "src")
	patch := client.MergeFrom(src.DeepCopy())
	src.Labels = map[string]string{"app": "web"}
	if err := k8s.Patch(ctx, src, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the source VM has an address", func() (bool, string) {
		src = getVM(t, ns, "src")
		return src.Status.IPAddress != "", src.Status.IPAddress
	})

	dry := newClone(ns, "dry", "src", v1alpha2.ModeDryRun, "-copy")
	createAll(t, dry)
	waitOp(t, dry, v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted)
	lines := resourceLines(dry)
	for _, want := range []string{
		"VirtualDisk/src-root-copy Completed: would be made as a copy of disk src-root",
		"VirtualDisk/src-data-copy Completed: would be made as a copy of disk src-data",
		"VirtualMachine/src-copy Completed: would be made as a clone of VM src",
	} {
		if !strings.Contains(lines, want) {
			t.Errorf("DryRun's status.resources lacks %q:\n%s", want, lines)
		}
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "src-copy"}, &v1alpha2.VirtualMachine{}); client.IgnoreNotFound(err) != nil || err == nil {
		t.Errorf("DryRun made the VM: %v", err)
	}
	var snaps v1alpha2.VirtualMachineSnapshotList
	if err := k8s.List(ctx, &snaps, client.InNamespace(ns)); err != nil || len(snaps.Items) != 0 {
		t.Errorf("DryRun took a snapshot: %v %d", err, len(snaps.Items))
	}

	op := newClone(ns, "clone", "src", v1alpha2.ModeStrict, "",
		replace("VirtualMachine", "src", "clone"), replace("VirtualDisk", "src-root", "clone-root"), replace("", "src-data", "clone-data"))
	createAll(t, op)
	waitOp(t, op, v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted)
	t.Logf("clone's status.resources:\n%s", resourceLines(op))
	for _, c := range []struct{ disk, read string }{{"clone-root", "read -P 0x21 512k 64k"}, {"clone-data", "read -P 0x31 1M 64k"}} {
		d := waitDisk(t, ns, c.disk, v1alpha2.ImageReady)
		if d.Annotations[restore.AnnotationClonedBy] != string(op.UID) {
			t.Errorf("disk %s annotations %v", c.disk, d.Annotations)
		}
		if err := qemuIO(t, d.Status.Path, c.read); err != nil {
			t.Errorf("cloned disk %s lacks the source's data: %v", c.disk, err)
		}
	}
	if d := waitDisk(t, ns, "clone-data", v1alpha2.ImageReady); d.Status.Capacity != "8Mi" {
		t.Errorf("the cloned data disk has capacity %s", d.Status.Capacity)
	}
	clone := getVM(t, ns, "clone")
	var refs []string
	for _, r := range clone.Spec.BlockDeviceRefs {
		refs = append(refs, r.Name)
	}
	if fmt.Sprint(refs) != "[clone-root clone-data]" || len(clone.Labels) != 0 || clone.Spec.VirtualMachineIPAddressName != "" ||
		clone.Spec.Memory.Size.String() != "128Mi" || clone.Spec.RunPolicy != v1alpha2.Manual {
		t.Errorf("the clone: refs %v, labels %v, vmip %q, spec %+v", refs, clone.Labels, clone.Spec.VirtualMachineIPAddressName, clone.Spec)
	}
	eventually(t, timeout, "the clone has an address of its own", func() (bool, string) {
		clone = getVM(t, ns, "clone")
		return clone.Status.IPAddress != "" && clone.Status.IPAddress != src.Status.IPAddress &&
				clone.Status.VirtualMachineIPAddressName != src.Status.VirtualMachineIPAddressName,
			fmt.Sprintf("clone %s (%s), source %s (%s)", clone.Status.IPAddress, clone.Status.VirtualMachineIPAddressName, src.Status.IPAddress, src.Status.VirtualMachineIPAddressName)
	})
	if diskUID(t, ns, "src-root") != string(root.UID) || diskUID(t, ns, "src-data") != string(data.UID) || getVM(t, ns, "src").Labels["app"] != "web" {
		t.Errorf("the clone changed its source")
	}

	// The same names again: taken, nothing made.
	again := newClone(ns, "again", "src", v1alpha2.ModeStrict, "", replace("VirtualMachine", "src", "clone"), replace("VirtualDisk", "src-root", "clone-root"))
	createAll(t, again)
	waitOp(t, again, v1alpha2.OpFailed, v1alpha2.ReasonOperationFailed)
	if _, msg := again.Outcome(); !strings.Contains(msg, "VirtualMachine clone exists already") || !strings.Contains(msg, "VirtualDisk clone-root exists already") {
		t.Errorf("a clone onto taken names says %q", msg)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "src-data"}, &v1alpha2.VirtualDisk{}); err != nil {
		t.Errorf("the source's data disk: %v", err)
	}
}

// TestVMSnapshotOperation: a vmsop CreateVirtualMachine makes a VM and disks from a VM
// snapshot, named with the guide's prefix and suffix, holding the snapshot's data (not
// what the source wrote afterwards); the operation without createVirtualMachine is refused.
func TestVMSnapshotOperation(t *testing.T) {
	ns := newNamespace(t)
	root, _ := twoDiskVM(t, ns, "database", v1alpha2.Manual)
	createAll(t, newVMSnapshot(ns, "database-snapshot", "database", true, v1alpha2.KeepIPAddressAlways))
	waitVMSnapshot(t, ns, "database-snapshot", v1alpha2.VMSnapshotReady, v1alpha2.ReasonVMSnapshotReady)
	if err := qemuIO(t, root.Status.Path, "write -P 0x99 512k 64k"); err != nil {
		t.Fatal(err)
	}
	op := &v1alpha2.VirtualMachineSnapshotOperation{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "clone-database-from-snapshot"},
		Spec: v1alpha2.VirtualMachineSnapshotOperationSpec{Type: v1alpha2.SnapshotOpCreateVM, VirtualMachineSnapshotName: "database-snapshot",
			CreateVirtualMachine: &v1alpha2.CloneSpec{Mode: v1alpha2.ModeStrict, Customization: &v1alpha2.NameCustomization{NamePrefix: "clone-", NameSuffix: "-prod"}}}}
	createAll(t, op)
	eventually(t, timeout, "vmsop Completed", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(op), op)
		c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted)
		return op.Status.Phase == "Completed" && c != nil && c.Reason == v1alpha2.ReasonOperationCompleted, fmt.Sprintf("%s %+v", op.Status.Phase, c)
	})
	d := waitDisk(t, ns, "clone-database-root-prod", v1alpha2.ImageReady)
	if err := qemuIO(t, d.Status.Path, "read -P 0x21 512k 64k"); err != nil {
		t.Errorf("the disk made from the snapshot lacks the snapshot's data: %v", err)
	}
	waitDisk(t, ns, "clone-database-data-prod", v1alpha2.ImageReady)
	vm := getVM(t, ns, "clone-database-prod")
	if len(vm.Spec.BlockDeviceRefs) != 2 || vm.Spec.BlockDeviceRefs[0].Name != "clone-database-root-prod" || vm.Spec.VirtualMachineIPAddressName != "" {
		t.Errorf("the VM made from the snapshot: %+v", vm.Spec)
	}
	out := printed(t, ns, "virtualmachinesnapshotoperations", "")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 ||
		strings.Join(strings.Fields(lines[0]), " ") != "NAME PHASE TYPE VIRTUALMACHINESNAPSHOT AGE" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "clone-database-from-snapshot Completed CreateVirtualMachine database-snapshot ") {
		t.Errorf("kubectl get vmsop prints\n%s", out)
	}

	bad := op.DeepCopy()
	bad.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: "no-spec"}
	bad.Spec.CreateVirtualMachine = nil
	if err := k8s.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "CreateVirtualMachine requires createVirtualMachine field.") {
		t.Errorf("a vmsop without createVirtualMachine was not refused: %v", err)
	}
	bad.Spec.CreateVirtualMachine = &v1alpha2.CloneSpec{Mode: v1alpha2.ModeStrict}
	if err := k8s.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "a clone needs new names") {
		t.Errorf("a vmsop without new names was not refused: %v", err)
	}
}
