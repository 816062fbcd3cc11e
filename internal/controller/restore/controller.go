package restore

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/vmsnapshot"
)

// AnnotationRestoredBy on a VirtualDisk is the UID of the Restore operation that made it.
const AnnotationRestoredBy = "virtualization.ferryvm.io/restored-by"

// Reconciler runs Restore operations.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// APIReader reads the snapshot's Secret past the cache (Secrets are not cached).
	APIReader client.Reader
}

// SetupWithManager registers the controller; the index of operations by VM is the power
// package's.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	ops := predicate.NewPredicateFuncs(func(o client.Object) bool {
		op, ok := o.(*v1alpha2.VirtualMachineOperation)
		return ok && op.Spec.Type == v1alpha2.OpRestore
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineOperation{}, builder.WithPredicates(ops)).
		// A restore waits for the disks it makes again.
		Watches(&v1alpha2.VirtualDisk{}, handler.EnqueueRequestsFromMapFunc(r.opsOfDisk)).
		Named("vmop-restore").
		Complete(r)
}

// Reconcile moves one Restore forward.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &v1alpha2.VirtualMachineOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if op.Finished() || !op.DeletionTimestamp.IsZero() || op.Spec.Restore == nil {
		return ctrl.Result{}, nil
	}
	sc, o, err := r.observe(ctx, op)
	if err != nil {
		return ctrl.Result{}, err
	}
	if o.phase == "" {
		o, err = r.step(ctx, op, sc)
		if err != nil {
			return ctrl.Result{}, err
		}
	}
	return r.record(ctx, op, o)
}

// scope is what one reconcile of a restore observed.
type scope struct {
	vm      *v1alpha2.VirtualMachine
	snap    *v1alpha2.VirtualMachineSnapshot
	content vmsnapshot.Content
	// started: the restore has changed something already (a disk deleted or made again):
	// it goes on to the end whatever the VM's phase.
	started bool
}

// outcome is where a restore is: a phase, the Completed condition's reason and message,
// and the resources it touches.
type outcome struct {
	phase     v1alpha2.OperationPhase
	reason    string
	message   string
	resources []v1alpha2.SnapshotResourceStatus
}

func failed(reason, format string, args ...any) outcome {
	return outcome{phase: v1alpha2.OpFailed, reason: reason, message: fmt.Sprintf(format, args...)}
}

// observe reads the VM, the snapshot and its Secret; an outcome with a phase ends the
// restore before it changes anything.
func (r *Reconciler) observe(ctx context.Context, op *v1alpha2.VirtualMachineOperation) (scope, outcome, error) {
	var sc scope
	sc.started = op.Status.Phase == v1alpha2.OpInProgress
	sc.vm = &v1alpha2.VirtualMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: op.Spec.VirtualMachineName}, sc.vm); err != nil {
		if apierrors.IsNotFound(err) {
			return sc, failed(v1alpha2.ReasonVMNotFound, "VirtualMachine %s not found in namespace %s", op.Spec.VirtualMachineName, op.Namespace), nil
		}
		return sc, outcome{}, err
	}
	name := op.Spec.Restore.VirtualMachineSnapshotName
	sc.snap = &v1alpha2.VirtualMachineSnapshot{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: name}, sc.snap); err != nil {
		if apierrors.IsNotFound(err) {
			return sc, failed(v1alpha2.ReasonOperationFailed, "VirtualMachineSnapshot %s not found in namespace %s", name, op.Namespace), nil
		}
		return sc, outcome{}, err
	}
	switch {
	case sc.snap.Spec.VirtualMachineName != sc.vm.Name:
		return sc, failed(v1alpha2.ReasonOperationFailed, "VirtualMachineSnapshot %s is a snapshot of VM %s, not of %s: name a snapshot of this VM", name, sc.snap.Spec.VirtualMachineName, sc.vm.Name), nil
	case sc.snap.Status.Phase != v1alpha2.VMSnapshotReady:
		return sc, failed(v1alpha2.ReasonOperationFailed, "VirtualMachineSnapshot %s is %s, not Ready: restore from a Ready snapshot", name, phaseOr(string(sc.snap.Status.Phase))), nil
	}
	sec := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: sc.snap.Status.VirtualMachineSnapshotSecretName}, sec); err != nil {
		if apierrors.IsNotFound(err) {
			return sc, failed(v1alpha2.ReasonOperationFailed, "the Secret %s of VirtualMachineSnapshot %s is gone: the snapshot cannot be restored", sc.snap.Status.VirtualMachineSnapshotSecretName, name), nil
		}
		return sc, outcome{}, err
	}
	content, err := vmsnapshot.Decode(sec)
	if err != nil {
		return sc, failed(v1alpha2.ReasonOperationFailed, "VirtualMachineSnapshot %s cannot be restored: %v", name, err), nil
	}
	sc.content = content
	if content.VM.Name != sc.vm.Name || content.VM.UID != sc.vm.UID {
		return sc, failed(v1alpha2.ReasonOperationFailed, "VirtualMachineSnapshot %s was taken of another VM named %s (UID %s; this one is %s): a snapshot restores only the VM it was taken of",
			name, content.VM.Name, content.VM.UID, sc.vm.UID), nil
	}
	if !sc.started && op.Spec.Restore.Mode != v1alpha2.ModeDryRun && sc.vm.Status.Phase != v1alpha2.MachineStopped {
		return sc, failed(v1alpha2.ReasonNotApplicableState, "VirtualMachine %s is %s: a restore needs it Stopped. Stop it (a vmop of type Stop; runPolicy AlwaysOn must be changed first), "+
			"then create the Restore again; nothing was changed", sc.vm.Name, phaseOr(string(sc.vm.Status.Phase))), nil
	}
	return sc, outcome{}, nil
}

// record writes the outcome into the operation's status, once, with its resourceVersion.
func (r *Reconciler) record(ctx context.Context, op *v1alpha2.VirtualMachineOperation, o outcome) (ctrl.Result, error) {
	if o.phase == "" {
		// Nothing decided (an object not in the cache yet): look again.
		return ctrl.Result{Requeue: true}, nil
	}
	orig := op.DeepCopy()
	status := metav1.ConditionFalse
	if o.phase == v1alpha2.OpCompleted {
		status = metav1.ConditionTrue
	}
	changed := op.Status.Phase != o.phase
	op.Status.Phase = o.phase
	op.Status.ObservedGeneration = op.Generation
	if o.resources != nil {
		op.Status.Resources = o.resources
	}
	meta.SetStatusCondition(&op.Status.Conditions, metav1.Condition{
		Type: v1alpha2.OpConditionCompleted, Status: status, Reason: o.reason, Message: o.message, ObservedGeneration: op.Generation,
	})
	if !equality.Semantic.DeepEqual(orig.Status, op.Status) {
		if err := r.Client.Status().Patch(ctx, op, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{Requeue: true}, nil
			}
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	if changed {
		kind := corev1.EventTypeNormal
		if o.phase == v1alpha2.OpFailed {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(op, kind, string(o.phase), "%s %s: %s", op.Spec.Type, o.phase, o.message)
	}
	if o.phase == v1alpha2.OpInProgress {
		// Disk changes wake the operation; this bounds a missed one.
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	}
	return ctrl.Result{}, nil
}

// opsOfDisk wakes the unfinished restores of the disk's namespace.
func (r *Reconciler) opsOfDisk(ctx context.Context, obj client.Object) []reconcile.Request {
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &ops, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, op := range ops.Items {
		if op.Spec.Type == v1alpha2.OpRestore && !op.Finished() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&op)})
		}
	}
	return out
}

func phaseOr(p string) string {
	if p == "" {
		return "Pending"
	}
	return p
}
