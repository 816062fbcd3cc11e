package restore

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// SnapshotOperationReconciler runs VirtualMachineSnapshotOperations (CreateVirtualMachine):
// a new VM and disks from a Ready VirtualMachineSnapshot, named and checked as a Clone's.
type SnapshotOperationReconciler struct {
	Reconciler
}

// SetupWithManager registers the controller.
func (r *SnapshotOperationReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineSnapshotOperation{}).
		Watches(&v1alpha2.VirtualDisk{}, handler.EnqueueRequestsFromMapFunc(r.unfinished)).
		Watches(&v1alpha2.VirtualMachineSnapshot{}, handler.EnqueueRequestsFromMapFunc(r.unfinished)).
		Named("vmsop").
		Complete(r)
}

// Reconcile moves one snapshot operation forward.
func (r *SnapshotOperationReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &v1alpha2.VirtualMachineSnapshotOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if finished(op.Status.Phase) || !op.DeletionTimestamp.IsZero() || op.Spec.CreateVirtualMachine == nil {
		return ctrl.Result{}, nil
	}
	o, err := r.step(ctx, op)
	if err != nil {
		return ctrl.Result{}, err
	}
	return r.recordSop(ctx, op, o)
}

func finished(p v1alpha2.SnapshotOperationPhase) bool {
	return p == v1alpha2.SnapshotOperationPhase(v1alpha2.OpCompleted) || p == v1alpha2.SnapshotOperationPhase(v1alpha2.OpFailed)
}

func (r *SnapshotOperationReconciler) step(ctx context.Context, op *v1alpha2.VirtualMachineSnapshotOperation) (outcome, error) {
	name := op.Spec.VirtualMachineSnapshotName
	snap := &v1alpha2.VirtualMachineSnapshot{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: name}, snap); err != nil {
		if apierrors.IsNotFound(err) {
			return failed(v1alpha2.ReasonOperationFailed, "VirtualMachineSnapshot %s not found in namespace %s", name, op.Namespace), nil
		}
		return outcome{}, err
	}
	content, o, err := r.snapshotContent(ctx, snap)
	if err != nil || o.phase != "" {
		if o.phase == v1alpha2.OpInProgress {
			o.phase = v1alpha2.OpPending
		}
		return o, err
	}
	return r.clone(ctx, op, op.Spec.CreateVirtualMachine, content, "VirtualMachineSnapshot "+name, v1alpha2.ReasonCloneInProgress)
}

// recordSop writes the outcome into the operation's status, once, with its
// resourceVersion.
func (r *SnapshotOperationReconciler) recordSop(ctx context.Context, op *v1alpha2.VirtualMachineSnapshotOperation, o outcome) (ctrl.Result, error) {
	if o.phase == "" {
		return ctrl.Result{Requeue: true}, nil
	}
	orig := op.DeepCopy()
	status := metav1.ConditionFalse
	if o.phase == v1alpha2.OpCompleted {
		status = metav1.ConditionTrue
	}
	phase := v1alpha2.SnapshotOperationPhase(o.phase)
	changed := op.Status.Phase != phase
	op.Status.Phase = phase
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
	if !finished(phase) {
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	}
	return ctrl.Result{}, nil
}

// unfinished wakes the unfinished snapshot operations of the object's namespace.
func (r *SnapshotOperationReconciler) unfinished(ctx context.Context, obj client.Object) []reconcile.Request {
	var ops v1alpha2.VirtualMachineSnapshotOperationList
	if err := r.Client.List(ctx, &ops, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, op := range ops.Items {
		if !finished(op.Status.Phase) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&op)})
		}
	}
	return out
}
