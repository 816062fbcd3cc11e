package controller_test

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/restore"
)

// waitGuideOp waits for a VirtualMachineOperation made from a guide manifest to complete.
func waitGuideOp(t *testing.T, ns, name string) *v1alpha2.VirtualMachineOperation {
	t.Helper()
	op := &v1alpha2.VirtualMachineOperation{}
	op.Namespace, op.Name = ns, name
	waitOp(t, op, v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted)
	return op
}

// TestGuideVMSnapshotManifests: the user guide's VM snapshot, restore, clone and
// clone-from-snapshot examples (test/e2e/testdata/guide 27-30) are accepted and do what
// the guide says: the snapshot is Ready, the restore completes, the clones are named
// clone-database-prod with a disk clone-database-root-prod. The guide's renaming example
// (nameReplacements with to.name, which Deckhouse's CRD lacks too) is refused saying what
// to set.
func TestGuideVMSnapshotManifests(t *testing.T) {
	ns := newNamespace(t)
	blankDisk(t, ns, "linux-vm-root", "8Mi")
	createAll(t, newVM(ns, "linux-vm", "linux-vm-root", v1alpha2.Manual))
	waitPhase(t, ns, "linux-vm", v1alpha2.MachineStopped)
	applyGuideManifest(t, ns, "27-vmsnapshot.yaml")
	s := waitVMSnapshot(t, ns, "linux-vm-snapshot", v1alpha2.VMSnapshotReady, v1alpha2.ReasonVMSnapshotReady)
	var res []string
	for _, r := range s.Status.Resources {
		res = append(res, r.APIVersion+" "+r.Kind+" "+r.Name)
	}
	if want := "[virtualization.deckhouse.io/v1alpha2 VirtualMachine linux-vm virtualization.deckhouse.io/v1alpha2 VirtualDisk linux-vm-root]"; fmt.Sprint(res) != want {
		t.Errorf("the guide's snapshot lists %v, want %s", res, want)
	}
	applyGuideManifest(t, ns, "28-vmop-restore.yaml")
	waitGuideOp(t, ns, "restore-vm")
	if d := waitDisk(t, ns, "linux-vm-root", v1alpha2.ImageReady); d.Spec.DataSource == nil || d.Spec.DataSource.ObjectRef == nil ||
		d.Spec.DataSource.ObjectRef.Kind != v1alpha2.VirtualDiskSnapshotKind {
		t.Errorf("the restored disk's dataSource %+v, want its snapshot (as the guide says)", d.Spec.DataSource)
	}

	// Clone from the VM, in its own namespace; then from a snapshot in another.
	for _, c := range []struct{ manifest, op string }{{"29-vmop-clone.yaml", "clone-database"}, {"30-vmsop.yaml", "clone-database-from-snapshot"}} {
		ns := newNamespace(t)
		blankDisk(t, ns, "database-root", "8Mi")
		createAll(t, newVM(ns, "database", "database-root", v1alpha2.Manual))
		waitPhase(t, ns, "database", v1alpha2.MachineStopped)
		if c.manifest == "30-vmsop.yaml" {
			createAll(t, newVMSnapshot(ns, "database-snapshot", "database", true, v1alpha2.KeepIPAddressAlways))
			waitVMSnapshot(t, ns, "database-snapshot", v1alpha2.VMSnapshotReady, "")
		}
		applyGuideManifest(t, ns, c.manifest)
		if c.manifest == "29-vmop-clone.yaml" {
			op := waitGuideOp(t, ns, c.op)
			// The clone's temporary snapshot goes once the clone is made, as Deckhouse's.
			eventually(t, timeout, "the clone's snapshot deleted", func() (bool, string) {
				err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: restore.CloneSnapshotName(op.Name)}, &v1alpha2.VirtualMachineSnapshot{})
				return client.IgnoreNotFound(err) == nil && err != nil, fmt.Sprint(err)
			})
		} else {
			op := &v1alpha2.VirtualMachineSnapshotOperation{}
			eventually(t, timeout, "vmsop Completed", func() (bool, string) {
				_ = k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: c.op}, op)
				c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted)
				return op.Status.Phase == "Completed", fmt.Sprintf("%s %+v", op.Status.Phase, c)
			})
		}
		waitDisk(t, ns, "clone-database-root-prod", v1alpha2.ImageReady)
		if vm := getVM(t, ns, "clone-database-prod"); len(vm.Spec.BlockDeviceRefs) != 1 || vm.Spec.BlockDeviceRefs[0].Name != "clone-database-root-prod" {
			t.Errorf("%s: the clone names %+v", c.manifest, vm.Spec.BlockDeviceRefs)
		}
	}

	// The guide's renaming example, as written.
	const renaming = `apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachineOperation
metadata:
  name: clone-database
spec:
  type: Clone
  virtualMachineName: database
  clone:
    mode: Strict
    nameReplacements:
      - from:
          kind: VirtualMachine
          name: database
        to:
          name: database-clone`
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(renaming), &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(ns)
	if err := k8s.Create(ctx, u); err == nil || !strings.Contains(err.Error(), "a clone needs new names: set customization.namePrefix, customization.nameSuffix or nameReplacement") {
		t.Errorf("the guide's renaming example was not refused saying what to set: %v", err)
	}
}
