package restore

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/vmsnapshot"
)

// action is what the restore does with one object.
type action int

const (
	actNone     action = iota // nothing to do, or done
	actConflict               // stands in the way: the restore cannot run
	actWait                   // being made: wait
	actDelete                 // delete the disk, to make it again
	actCreate                 // make the disk from its snapshot
	actUpdateVM               // set the VM's spec back
)

// item is one object of the restore, what is done with it, and what its status line says
// in DryRun (would) and for real (does).
type item struct {
	kind, name  string
	act         action
	would, does string
	disk        *vmsnapshot.SavedDisk
	// release: the VM holds the disk (status.attachedToVirtualMachines), which keeps a
	// deleted disk: the restore gives up the hold of the Stopped VM.
	release bool
}

// plan looks at every object the restore touches, changing nothing. spec is the VM's spec
// to set back (BestEffort leaves out images that are gone).
func (r *Reconciler) plan(ctx context.Context, op *v1alpha2.VirtualMachineOperation, sc scope) ([]item, *v1alpha2.VirtualMachineSpec, error) {
	ns := op.Namespace
	spec := sc.content.VM.Spec.DeepCopy()
	var items []item
	kept := spec.BlockDeviceRefs[:0]
	for _, ref := range spec.BlockDeviceRefs {
		if ref.Kind == v1alpha2.DiskDevice {
			kept = append(kept, ref)
			continue
		}
		ok, err := r.imageExists(ctx, ns, ref)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case ok:
			kept = append(kept, ref)
		case op.Spec.Restore.Mode == v1alpha2.ModeBestEffort:
			msg := "is gone: left out of the VM's blockDeviceRefs (BestEffort)"
			items = append(items, item{kind: string(ref.Kind), name: ref.Name, would: "would be " + strings.TrimPrefix(msg, "is gone: "), does: msg})
		default:
			kept = append(kept, ref)
			msg := "is gone: the VM names it as the snapshot did and waits for it (Strict); BestEffort would leave it out"
			items = append(items, item{kind: string(ref.Kind), name: ref.Name, would: msg, does: msg})
		}
	}
	spec.BlockDeviceRefs = kept
	for i := range sc.content.Disks {
		it, err := r.planDisk(ctx, op, sc, &sc.content.Disks[i])
		if err != nil {
			return nil, nil, err
		}
		items = append(items, it)
	}
	if a := sc.content.Address; a != nil {
		it := item{kind: "VirtualMachineIPAddress", name: a.Name}
		ip := &v1alpha2.VirtualMachineIPAddress{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: a.Name}, ip)
		switch {
		case apierrors.IsNotFound(err):
			it.would, it.does = "is gone: the VM gets an address as its spec says", "is gone: the VM gets an address as its spec says"
		case err != nil:
			return nil, nil, err
		case ip.Status.VirtualMachine != "" && ip.Status.VirtualMachine != sc.vm.Name:
			it.act, it.does = actConflict, fmt.Sprintf("is used by VM %s: free it (or restore with a snapshot taken with keepIPAddress Never)", ip.Status.VirtualMachine)
		default:
			it.would, it.does = "kept: the VM keeps address "+a.Address, "kept: the VM keeps address "+a.Address
		}
		items = append(items, it)
	}
	vmItem := item{kind: "VirtualMachine", name: sc.vm.Name, would: "its spec would be set back to the snapshot's", does: "its spec is set back to the snapshot's", act: actUpdateVM}
	if equality.Semantic.DeepEqual(*spec, sc.vm.Spec) {
		vmItem.act, vmItem.would, vmItem.does = actNone, "its spec is the snapshot's already", "its spec is the snapshot's"
	}
	items = append(items, vmItem)
	return items, spec, nil
}

// planDisk decides what to do with one disk of the snapshot.
func (r *Reconciler) planDisk(ctx context.Context, op *v1alpha2.VirtualMachineOperation, sc scope, d *vmsnapshot.SavedDisk) (item, error) {
	it := item{kind: "VirtualDisk", name: d.Name, disk: d}
	ds := &v1alpha2.VirtualDiskSnapshot{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: d.VirtualDiskSnapshotName}, ds)
	switch {
	case apierrors.IsNotFound(err):
		it.act, it.does = actConflict, fmt.Sprintf("its VirtualDiskSnapshot %s is gone: the snapshot cannot restore it", d.VirtualDiskSnapshotName)
		return it, nil
	case err != nil:
		return it, err
	case ds.Status.Phase != v1alpha2.SnapshotReady:
		it.act, it.does = actConflict, fmt.Sprintf("its VirtualDiskSnapshot %s is %s, not Ready", d.VirtualDiskSnapshotName, phaseOr(string(ds.Status.Phase)))
		return it, nil
	}
	disk := &v1alpha2.VirtualDisk{}
	err = r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: d.Name}, disk)
	switch {
	case apierrors.IsNotFound(err):
		it.act = actCreate
		it.would = "would be made from VirtualDiskSnapshot " + d.VirtualDiskSnapshotName
		it.does = "being made from VirtualDiskSnapshot " + d.VirtualDiskSnapshotName
		return it, nil
	case err != nil:
		return it, err
	}
	for _, a := range disk.Status.AttachedToVirtualMachines {
		if a.Name != sc.vm.Name {
			it.act, it.does = actConflict, fmt.Sprintf("is held by VM %s: detach it from that VM first", a.Name)
			return it, nil
		}
		it.release = true
	}
	if disk.Annotations[AnnotationRestoredBy] == string(op.UID) {
		switch disk.Status.Phase {
		case v1alpha2.ImageReady:
			it.does = "made again from VirtualDiskSnapshot " + d.VirtualDiskSnapshotName
		case v1alpha2.ImageFailed:
			msg := ""
			if c := meta.FindStatusCondition(disk.Status.Conditions, "Ready"); c != nil {
				msg = ": " + c.Message
			}
			it.act, it.does = actConflict, "could not be made from VirtualDiskSnapshot "+d.VirtualDiskSnapshotName+msg
		default:
			it.act, it.does = actWait, "being made from VirtualDiskSnapshot "+d.VirtualDiskSnapshotName
		}
		return it, nil
	}
	it.would = "would be deleted and made again from VirtualDiskSnapshot " + d.VirtualDiskSnapshotName
	it.does = "being deleted, to be made again from VirtualDiskSnapshot " + d.VirtualDiskSnapshotName
	it.act = actDelete
	if !disk.DeletionTimestamp.IsZero() {
		it.act = actWait
	}
	return it, nil
}

// step plans the restore and, unless DryRun or a conflict, carries out what it can now.
func (r *Reconciler) step(ctx context.Context, op *v1alpha2.VirtualMachineOperation, sc scope) (outcome, error) {
	items, spec, err := r.plan(ctx, op, sc)
	if err != nil {
		return outcome{}, err
	}
	dry := op.Spec.Restore.Mode == v1alpha2.ModeDryRun
	var conflicts []string
	for _, it := range items {
		if it.act == actConflict {
			conflicts = append(conflicts, it.kind+" "+it.name+" "+it.does)
		}
	}
	if len(conflicts) > 0 {
		what := "nothing was changed"
		if sc.started {
			what = "the restore stopped part way: the disks made so far stay; delete this operation and restore again once this is fixed"
		}
		return outcome{phase: v1alpha2.OpFailed, reason: v1alpha2.ReasonOperationFailed, resources: statuses(items, stageFailed),
			message: fmt.Sprintf("VirtualMachine %s cannot be restored from %s: %s; %s", sc.vm.Name, sc.snap.Name, strings.Join(conflicts, "; "), what)}, nil
	}
	if dry {
		return outcome{phase: v1alpha2.OpCompleted, reason: v1alpha2.ReasonOperationCompleted, resources: statuses(items, stageDryRun),
			message: fmt.Sprintf("DryRun: VirtualMachine %s can be restored from %s; status.resources says what would change, and nothing was changed", sc.vm.Name, sc.snap.Name)}, nil
	}
	busy := false
	for _, it := range items {
		switch it.act {
		case actDelete:
			busy = true
			if err := r.deleteDisk(ctx, op.Namespace, it); err != nil {
				return outcome{}, err
			}
		case actCreate:
			busy = true
			if err := r.createDisk(ctx, op, it.disk); err != nil {
				return outcome{}, err
			}
		case actWait:
			busy = true
			if it.release {
				if err := r.deleteDisk(ctx, op.Namespace, it); err != nil {
					return outcome{}, err
				}
			}
		}
	}
	if busy {
		return outcome{phase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonRestoreInProgress, resources: statuses(items, stageRunning),
			message: fmt.Sprintf("restoring VirtualMachine %s from %s: making its disks again", sc.vm.Name, sc.snap.Name)}, nil
	}
	// The disks are made again: the VM's spec goes back last.
	if !equality.Semantic.DeepEqual(*spec, sc.vm.Spec) {
		patch := client.MergeFromWithOptions(sc.vm.DeepCopy(), client.MergeFromWithOptimisticLock{})
		sc.vm.Spec = *spec
		if err := r.Client.Patch(ctx, sc.vm, patch); err != nil {
			return outcome{}, err
		}
	}
	return outcome{phase: v1alpha2.OpCompleted, reason: v1alpha2.ReasonOperationCompleted, resources: statuses(items, stageDone),
		message: fmt.Sprintf("VirtualMachine %s restored from %s: %d disk(s) made again from their snapshots and its spec set back; it starts if its runPolicy says so",
			sc.vm.Name, sc.snap.Name, len(sc.content.Disks))}, nil
}

// deleteDisk deletes a disk of the Stopped VM, giving up the VM's hold on it (which keeps a
// deleted disk). The VM controller takes the hold again while it sees the disk Ready, so
// the hold is given up at every step until the disk is gone.
func (r *Reconciler) deleteDisk(ctx context.Context, ns string, it item) error {
	d := &v1alpha2.VirtualDisk{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: it.name}, d); err != nil {
		return client.IgnoreNotFound(err)
	}
	if it.release && len(d.Status.AttachedToVirtualMachines) > 0 {
		orig := d.DeepCopy()
		d.Status.AttachedToVirtualMachines = nil
		err := r.Client.Status().Patch(ctx, d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		if client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			return err
		}
	}
	if d.DeletionTimestamp.IsZero() {
		return client.IgnoreNotFound(r.Client.Delete(ctx, d))
	}
	return nil
}

// createDisk makes a disk of the snapshot again from its disk snapshot, with its size.
func (r *Reconciler) createDisk(ctx context.Context, op *v1alpha2.VirtualMachineOperation, d *vmsnapshot.SavedDisk) error {
	disk := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: op.Namespace, Name: d.Name,
		Annotations: map[string]string{AnnotationRestoredBy: string(op.UID)}}}
	disk.Spec.PersistentVolumeClaim = d.Spec.PersistentVolumeClaim
	disk.Spec.DataSource = &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
		ObjectRef: &v1alpha2.ObjectRefSource{Kind: v1alpha2.VirtualDiskSnapshotKind, Name: d.VirtualDiskSnapshotName}}
	return client.IgnoreAlreadyExists(r.Client.Create(ctx, disk))
}

// stage is where a restore is, for its status.resources lines.
type stage int

const (
	stageDryRun  stage = iota // what would be done
	stageFailed               // a conflict: what stands in the way, and what was not done
	stageRunning              // what is being done
	stageDone                 // what was done
)

// statuses are the items as status.resources lines.
func statuses(items []item, at stage) []v1alpha2.SnapshotResourceStatus {
	out := make([]v1alpha2.SnapshotResourceStatus, 0, len(items))
	for _, it := range items {
		st, msg := v1alpha2.ResourceCompleted, it.does
		switch {
		case it.act == actConflict:
			st = v1alpha2.ResourceFailed
		case at == stageDryRun:
			msg = it.would
		case at == stageFailed && it.act != actNone && it.act != actWait:
			st, msg = v1alpha2.ResourceInProgress, "not changed: "+it.would
		case at != stageDone && it.act != actNone:
			st = v1alpha2.ResourceInProgress
		}
		out = append(out, v1alpha2.SnapshotResourceStatus{APIVersion: v1alpha2.GroupVersion.String(), Kind: it.kind, Name: it.name, Status: st, Message: msg})
	}
	return out
}

// imageExists tells whether the image a blockDeviceRef names exists.
func (r *Reconciler) imageExists(ctx context.Context, ns string, ref v1alpha2.BlockDeviceRef) (bool, error) {
	var obj client.Object = &v1alpha2.ClusterVirtualImage{}
	key := client.ObjectKey{Name: ref.Name}
	if ref.Kind == v1alpha2.ImageDevice {
		obj, key.Namespace = &v1alpha2.VirtualImage{}, ns
	}
	err := r.Client.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}
