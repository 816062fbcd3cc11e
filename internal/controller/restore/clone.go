package restore

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/vmsnapshot"
)

// AnnotationClonedBy on a VM or disk is the UID of the Clone operation that made it.
const AnnotationClonedBy = "virtualization.ferryvm.io/cloned-by"

// CloneReconciler runs Clone operations: it takes a VirtualMachineSnapshot of the VM
// (owned by the operation, requiredConsistency true: a running VM's clone waits for the VM
// to stop, saying so), then makes new disks from its disk snapshots and a new VM, renamed
// as spec.clone says, with a new address (so a new MAC) and without the source's labels;
// the snapshot is deleted once the operation has ended.
type CloneReconciler struct {
	Reconciler
}

// SetupWithManager registers the controller.
func (r *CloneReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ops := predicate.NewPredicateFuncs(func(o client.Object) bool {
		op, ok := o.(*v1alpha2.VirtualMachineOperation)
		return ok && op.Spec.Type == v1alpha2.OpClone
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineOperation{}, builder.WithPredicates(ops)).
		Owns(&v1alpha2.VirtualMachineSnapshot{}).
		Watches(&v1alpha2.VirtualDisk{}, handler.EnqueueRequestsFromMapFunc(r.clonesOfNamespace)).
		Named("vmop-clone").
		Complete(r)
}

// CloneSnapshotName is the VM snapshot a Clone operation takes.
func CloneSnapshotName(op string) string {
	return "clone-" + op
}

// Reconcile moves one Clone forward.
func (r *CloneReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &v1alpha2.VirtualMachineOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if op.Finished() {
		return ctrl.Result{}, r.dropSnapshot(ctx, op)
	}
	if !op.DeletionTimestamp.IsZero() || op.Spec.Clone == nil {
		return ctrl.Result{}, nil
	}
	o, err := r.step(ctx, op)
	if err != nil {
		return ctrl.Result{}, err
	}
	return r.record(ctx, op, o)
}

func (r *CloneReconciler) step(ctx context.Context, op *v1alpha2.VirtualMachineOperation) (outcome, error) {
	vm := &v1alpha2.VirtualMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: op.Spec.VirtualMachineName}, vm); err != nil {
		if apierrors.IsNotFound(err) {
			return failed(v1alpha2.ReasonVMNotFound, "VirtualMachine %s not found in namespace %s", op.Spec.VirtualMachineName, op.Namespace), nil
		}
		return outcome{}, err
	}
	if op.Spec.Clone.Mode == v1alpha2.ModeDryRun {
		// The plan from the VM as it is now; nothing is made, not even the snapshot.
		content := vmsnapshot.Content{VM: vmsnapshot.SavedVM{Name: vm.Name, UID: vm.UID, Spec: vm.Spec}}
		for _, ref := range vm.Spec.BlockDeviceRefs {
			if ref.Kind == v1alpha2.DiskDevice {
				content.Disks = append(content.Disks, vmsnapshot.SavedDisk{Name: ref.Name})
			}
		}
		return r.clone(ctx, op, op.Spec.Clone, content, "VirtualMachine "+vm.Name, v1alpha2.ReasonCloneInProgress)
	}
	snap := &v1alpha2.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: op.Namespace, Name: CloneSnapshotName(op.Name)},
		Spec: v1alpha2.VirtualMachineSnapshotSpec{VirtualMachineName: vm.Name, RequiredConsistency: true, KeepIPAddress: v1alpha2.KeepIPAddressNever}}
	if err := controllerutil.SetControllerReference(op, snap, r.Client.Scheme()); err != nil {
		return outcome{}, err
	}
	if err := r.Client.Create(ctx, snap); client.IgnoreAlreadyExists(err) != nil {
		return outcome{}, err
	}
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(snap), snap); err != nil {
		if apierrors.IsNotFound(err) {
			// Just made: the cache has not seen it yet.
			return outcome{phase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonCloneInProgress,
				message: fmt.Sprintf("taking VirtualMachineSnapshot %s of VM %s", snap.Name, vm.Name)}, nil
		}
		return outcome{}, err
	}
	if !metav1.IsControlledBy(snap, op) {
		return failed(v1alpha2.ReasonOperationFailed, "a VirtualMachineSnapshot named %s that this operation did not make is in the way: delete it, or name the operation otherwise", snap.Name), nil
	}
	content, o, err := r.snapshotContent(ctx, snap)
	if err != nil || o.phase != "" {
		return o, err
	}
	return r.clone(ctx, op, op.Spec.Clone, content, "VirtualMachine "+vm.Name, v1alpha2.ReasonCloneInProgress)
}

// dropSnapshot deletes the temporary snapshot of a finished clone, as Deckhouse's: the new
// disks are copies (their dataSource still names it). Only a reconcile that sees the
// operation finished deletes it, so that one reading an older operation does not take the
// snapshot again.
func (r *CloneReconciler) dropSnapshot(ctx context.Context, op *v1alpha2.VirtualMachineOperation) error {
	snap := &v1alpha2.VirtualMachineSnapshot{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: CloneSnapshotName(op.Name)}, snap); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(snap, op) || !snap.DeletionTimestamp.IsZero() {
		return nil
	}
	return client.IgnoreNotFound(r.Client.Delete(ctx, snap))
}

// snapshotContent reads a VM snapshot's content once it is Ready; an outcome with a phase
// says why not yet (InProgress) or never (Failed).
func (r *Reconciler) snapshotContent(ctx context.Context, snap *v1alpha2.VirtualMachineSnapshot) (vmsnapshot.Content, outcome, error) {
	var content vmsnapshot.Content
	why := ""
	for _, c := range snap.Status.Conditions {
		if c.Type == v1alpha2.VMSnapshotConditionReady {
			why = ": " + c.Message
		}
	}
	switch snap.Status.Phase {
	case v1alpha2.VMSnapshotReady:
	case v1alpha2.VMSnapshotFailed:
		return content, failed(v1alpha2.ReasonOperationFailed, "VirtualMachineSnapshot %s failed%s", snap.Name, why), nil
	default:
		return content, outcome{phase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonCloneInProgress,
			message: fmt.Sprintf("waiting for VirtualMachineSnapshot %s (%s%s)", snap.Name, phaseOr(string(snap.Status.Phase)), why)}, nil
	}
	sec := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: snap.Namespace, Name: snap.Status.VirtualMachineSnapshotSecretName}, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return content, failed(v1alpha2.ReasonOperationFailed, "the Secret %s of VirtualMachineSnapshot %s is gone", snap.Status.VirtualMachineSnapshotSecretName, snap.Name), nil
		}
		return content, outcome{}, err
	}
	content, err := vmsnapshot.Decode(sec)
	if err != nil {
		return content, failed(v1alpha2.ReasonOperationFailed, "VirtualMachineSnapshot %s cannot be cloned: %v", snap.Name, err), nil
	}
	return content, outcome{}, nil
}

// rename is the name an object of the source gets in the clone: a nameReplacement that
// matches it (by name, and kind if given), then the prefix and suffix.
func rename(c *v1alpha2.CloneSpec, kind, name string) string {
	for _, nr := range c.NameReplacement {
		if nr.From.Name == name && (nr.From.Kind == "" || nr.From.Kind == kind) {
			name = nr.To
			break
		}
	}
	if c.Customization != nil {
		name = c.Customization.NamePrefix + name + c.Customization.NameSuffix
	}
	return name
}

// clone plans the new VM and disks from content and, unless DryRun or a conflict, makes
// them. source names what is cloned, for messages. It serves the Clone operation (from a
// VM) and, with the same spec, a VirtualMachineSnapshotOperation (from a snapshot).
func (r *Reconciler) clone(ctx context.Context, op client.Object, spec *v1alpha2.CloneSpec, content vmsnapshot.Content, source, inProgress string) (outcome, error) {
	ns, uid := op.GetNamespace(), string(op.GetUID())
	vmSpec := content.VM.Spec.DeepCopy()
	var items []item
	conflict := func(kind, name, msg string) {
		items = append(items, item{kind: kind, name: name, act: actConflict, does: msg})
	}
	kept := vmSpec.BlockDeviceRefs[:0]
	for _, ref := range vmSpec.BlockDeviceRefs {
		if ref.Kind == v1alpha2.DiskDevice {
			ref.Name = rename(spec, "VirtualDisk", ref.Name)
			kept = append(kept, ref)
			continue
		}
		ok, err := r.imageExists(ctx, ns, ref)
		switch {
		case err != nil:
			return outcome{}, err
		case ok:
			kept = append(kept, ref)
		case spec.Mode == v1alpha2.ModeBestEffort:
			msg := "is gone: left out of the clone's blockDeviceRefs (BestEffort)"
			items = append(items, item{kind: string(ref.Kind), name: ref.Name, would: msg, does: msg})
		default:
			conflict(string(ref.Kind), ref.Name, "is gone: Strict needs every image the VM names; BestEffort leaves it out")
		}
	}
	vmSpec.BlockDeviceRefs = kept
	// A new address (so a new MAC): never the source's.
	vmSpec.VirtualMachineIPAddressName, vmSpec.VirtualMachineIPAddress = "", ""

	busy := false
	for _, d := range content.Disks {
		name := rename(spec, "VirtualDisk", d.Name)
		it := item{kind: "VirtualDisk", name: name}
		st, err := r.cloneTarget(ctx, ns, name, uid, &v1alpha2.VirtualDisk{})
		switch {
		case err != nil:
			return outcome{}, err
		case st == targetTaken:
			conflict("VirtualDisk", name, fmt.Sprintf("exists already (the clone of disk %s): name the clone's disks otherwise (nameReplacement, customization)", d.Name))
			continue
		case st == targetBadName:
			conflict("VirtualDisk", name, fmt.Sprintf("is not a valid name for the clone of disk %s: %s", d.Name, strings.Join(validation.IsDNS1123Subdomain(name), "; ")))
			continue
		case st == targetMade:
			it.act, it.does = actWait, "being made from VirtualDiskSnapshot "+d.VirtualDiskSnapshotName
			disk := &v1alpha2.VirtualDisk{}
			if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, disk); err != nil {
				return outcome{}, err
			}
			if disk.Status.Phase == v1alpha2.ImageReady {
				it.act, it.does = actNone, "made from VirtualDiskSnapshot "+d.VirtualDiskSnapshotName
			} else if disk.Status.Phase == v1alpha2.ImageFailed {
				it.act, it.does = actConflict, "could not be made from VirtualDiskSnapshot "+d.VirtualDiskSnapshotName
			}
		default:
			it.act, it.would, it.does = actCreate, "would be made as a copy of disk "+d.Name, "being made from VirtualDiskSnapshot "+d.VirtualDiskSnapshotName
			it.disk = &vmsnapshot.SavedDisk{Name: name, Spec: d.Spec, VirtualDiskSnapshotName: d.VirtualDiskSnapshotName}
		}
		items = append(items, it)
	}
	vmName := rename(spec, "VirtualMachine", content.VM.Name)
	vmItem := item{kind: "VirtualMachine", name: vmName, act: actUpdateVM, would: "would be made as a clone of VM " + content.VM.Name + ", with a new address", does: "made as a clone of VM " + content.VM.Name + ", with a new address"}
	switch st, err := r.cloneTarget(ctx, ns, vmName, uid, &v1alpha2.VirtualMachine{}); {
	case err != nil:
		return outcome{}, err
	case vmName == content.VM.Name || st == targetTaken:
		vmItem.act, vmItem.does = actConflict, "exists already: name the clone otherwise (nameReplacement of kind VirtualMachine, customization)"
	case st == targetBadName:
		vmItem.act, vmItem.does = actConflict, "is not a valid name for a VM: "+strings.Join(validation.IsDNS1123Subdomain(vmName), "; ")
	case st == targetMade:
		vmItem.act = actNone
	}
	items = append(items, vmItem)

	var conflicts []string
	for _, it := range items {
		if it.act == actConflict {
			conflicts = append(conflicts, it.kind+" "+it.name+" "+it.does)
		}
	}
	switch {
	case len(conflicts) > 0:
		return outcome{phase: v1alpha2.OpFailed, reason: v1alpha2.ReasonOperationFailed, resources: statuses(items, stageFailed),
			message: fmt.Sprintf("%s cannot be cloned: %s", source, strings.Join(conflicts, "; "))}, nil
	case spec.Mode == v1alpha2.ModeDryRun:
		return outcome{phase: v1alpha2.OpCompleted, reason: v1alpha2.ReasonOperationCompleted, resources: statuses(items, stageDryRun),
			message: fmt.Sprintf("DryRun: %s can be cloned as VM %s; status.resources says what would be made, and nothing was made", source, vmName)}, nil
	}
	for _, it := range items {
		switch it.act {
		case actCreate:
			busy = true
			disk := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: it.name, Annotations: map[string]string{AnnotationClonedBy: uid}}}
			disk.Spec.PersistentVolumeClaim = it.disk.Spec.PersistentVolumeClaim
			disk.Spec.DataSource = &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
				ObjectRef: &v1alpha2.ObjectRefSource{Kind: v1alpha2.VirtualDiskSnapshotKind, Name: it.disk.VirtualDiskSnapshotName}}
			if err := client.IgnoreAlreadyExists(r.Client.Create(ctx, disk)); err != nil {
				return outcome{}, err
			}
		case actWait:
			busy = true
		case actUpdateVM:
			newVM := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: vmName, Annotations: map[string]string{AnnotationClonedBy: uid}}, Spec: *vmSpec}
			if err := client.IgnoreAlreadyExists(r.Client.Create(ctx, newVM)); err != nil {
				return outcome{}, err
			}
		}
	}
	if busy {
		return outcome{phase: v1alpha2.OpInProgress, reason: inProgress, resources: statuses(items, stageRunning),
			message: fmt.Sprintf("cloning %s as VM %s: making its disks", source, vmName)}, nil
	}
	return outcome{phase: v1alpha2.OpCompleted, reason: v1alpha2.ReasonOperationCompleted, resources: statuses(items, stageDone),
		message: fmt.Sprintf("%s cloned as VM %s with %d disk(s); it gets a new address", source, vmName, len(content.Disks))}, nil
}

// target is what stands at a name the clone makes an object at.
type target int

const (
	targetFree    target = iota // nothing: the clone makes it
	targetMade                  // made by this operation
	targetTaken                 // another object
	targetBadName               // not a valid name
)

func (r *Reconciler) cloneTarget(ctx context.Context, ns, name, uid string, obj client.Object) (target, error) {
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		return targetBadName, nil
	}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, obj)
	switch {
	case apierrors.IsNotFound(err):
		return targetFree, nil
	case err != nil:
		return targetFree, err
	case obj.GetAnnotations()[AnnotationClonedBy] == uid:
		return targetMade, nil
	}
	return targetTaken, nil
}

// clonesOfNamespace wakes the unfinished clones of the disk's namespace.
func (r *CloneReconciler) clonesOfNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &ops, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, op := range ops.Items {
		if op.Spec.Type == v1alpha2.OpClone && !op.Finished() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&op)})
		}
	}
	return out
}
