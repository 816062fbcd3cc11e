package migration

import (
	"cmp"
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
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/power"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
)

// finalizer keeps an operation until its target pod is gone and the source is told to stop.
const finalizer = uninstall.FinalizerMigration

// Config tunes migrations.
type Config struct {
	// MaxBandwidthBytes caps the transfer rate (bytes/s).
	MaxBandwidthBytes int64
	// DowntimeLimit is the longest pause QEMU may plan for the switchover.
	DowntimeLimit time.Duration
	// CompletionTimeoutPerGiB bounds a migration's transfer time per GiB of guest memory.
	CompletionTimeoutPerGiB time.Duration
	// ProgressTimeout fails a migration whose remaining memory stops shrinking this long.
	ProgressTimeout time.Duration
	// SchedulingTimeout fails a migration whose target pod finds no node this long.
	SchedulingTimeout time.Duration
	// MaxOutboundPerNode and MaxInboundPerNode bound transfers per node; MaxParallel per
	// cluster (0: max(2, number of nodes)).
	MaxOutboundPerNode int
	MaxInboundPerNode  int
	MaxParallel        int
}

// DefaultConfig makes a dirtying guest converge on a 2-core TCG machine (measured: 128 MiB
// dirty guest 0.6 s at 1 GiB/s; at QEMU's default 128 MiB/s it never converges).
func DefaultConfig() Config {
	return Config{
		MaxBandwidthBytes:       1 << 30,
		DowntimeLimit:           300 * time.Millisecond,
		CompletionTimeoutPerGiB: 150 * time.Second,
		ProgressTimeout:         150 * time.Second,
		SchedulingTimeout:       60 * time.Second,
		MaxOutboundPerNode:      1,
		MaxInboundPerNode:       1,
	}
}

// Reconciler runs migration operations.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Config   Config
	// APIReader reads the configuration object without caching every ConfigMap.
	APIReader client.Reader
	Now       func() time.Time
	// Workers is how many operations reconcile at once (0: 8).
	Workers int

	slots slots
}

func isMigration(t v1alpha2.OperationType) bool {
	return t == v1alpha2.OpEvict || t == v1alpha2.OpMigrate
}

// SetupWithManager registers the controller; power.IndexOperations must have run.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	ops := predicate.NewPredicateFuncs(func(o client.Object) bool {
		op, ok := o.(*v1alpha2.VirtualMachineOperation)
		return ok && isMigration(op.Spec.Type)
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineOperation{}, builder.WithPredicates(ops)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.opsOfPod)).
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(r.arrivedOpsOfVM)).
		Watches(&v1alpha2.VirtualMachineOperation{}, handler.EnqueueRequestsFromMapFunc(r.waitersOf)).
		Named("vmop-migration").
		// Operations wait on the apiserver, not on each other: slots are granted under
		// one lock (takeSlot, takeInbound), so several can step at once.
		WithOptions(controller.Options{MaxConcurrentReconciles: cmp.Or(r.Workers, 8)}).
		Complete(r)
}

// opsOfPod wakes the unfinished migrations of the pod's VM.
func (r *Reconciler) opsOfPod(ctx context.Context, pod client.Object) []reconcile.Request {
	vm := pod.GetLabels()[v1alpha2.LabelVMName]
	if vm == "" {
		return nil
	}
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &ops, client.InNamespace(pod.GetNamespace()), client.MatchingFields{power.IndexVMName: vm}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, op := range ops.Items {
		if isMigration(op.Spec.Type) && (!op.Finished() || controllerutil.ContainsFinalizer(&op, finalizer)) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&op)})
		}
	}
	return out
}

// arrivedOpsOfVM wakes the migrations of the VM whose guest already runs on the target:
// they wait for the VM's status to name the new node (completing), which is the last
// stage of every migration's critical path.
func (r *Reconciler) arrivedOpsOfVM(ctx context.Context, vm client.Object) []reconcile.Request {
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &ops, client.InNamespace(vm.GetNamespace()), client.MatchingFields{power.IndexVMName: vm.GetName()}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, op := range ops.Items {
		if isMigration(op.Spec.Type) && !op.Finished() && op.Status.Migration != nil && op.Status.Migration.Phase == v1alpha2.MigrationDone {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&op)})
		}
	}
	return out
}

// step is what one phase handler decided. progress, when above 0, is the step's own
// estimate of status.progress (a transfer's); else the reason's fixed value applies
// (progressAfter).
type step struct {
	opPhase  v1alpha2.OperationPhase
	reason   string
	message  string
	requeue  time.Duration
	progress int
}

func wait(reason, msg string, after time.Duration) step {
	return step{opPhase: v1alpha2.OpInProgress, reason: reason, message: msg, requeue: after}
}

func fail(reason, format string, args ...any) step {
	return step{opPhase: v1alpha2.OpFailed, reason: reason, message: fmt.Sprintf(format, args...)}
}

// Reconcile moves one migration forward from its recorded phase.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &v1alpha2.VirtualMachineOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !op.DeletionTimestamp.IsZero() {
		return r.abort(ctx, op)
	}
	if op.Finished() {
		return ctrl.Result{}, r.release(ctx, op)
	}
	if controllerutil.AddFinalizer(op, finalizer) {
		if err := r.Client.Update(ctx, op); err != nil {
			return ctrl.Result{}, err
		}
	}
	orig := op.DeepCopy()
	if op.Status.Migration == nil {
		op.Status.Migration = &v1alpha2.OperationMigrationStatus{Phase: v1alpha2.MigrationPending}
	}
	var s step
	var err error
	switch op.Status.Migration.Phase {
	case v1alpha2.MigrationScheduling:
		s, err = r.scheduling(ctx, op)
	case v1alpha2.MigrationPreparing:
		s, err = r.preparing(ctx, op)
	case v1alpha2.MigrationTransferring, v1alpha2.MigrationDone:
		s, err = r.transferring(ctx, op)
	default:
		s, err = r.pending(ctx, op)
	}
	if err != nil || s.opPhase == v1alpha2.OpFailed {
		r.slots.drop(op.UID) // a slot this pass took is not used
	}
	if err != nil {
		return redo(err)
	}
	if s.opPhase == v1alpha2.OpFailed {
		// Failing removes the target, which cannot be undone: not on a stale read of the
		// operation. A pass that read it before its last write redoes an earlier phase (a
		// Preparing pass after the Transferring one found the source pod, which ended as
		// migrated, gone, and failed a migration that had arrived); its status write would
		// conflict, but only after the target was gone.
		if stale, err := r.staleRead(ctx, orig); err != nil {
			return redo(err)
		} else if stale {
			return ctrl.Result{Requeue: true}, nil
		}
		if err := r.cleanupFailed(ctx, op, s); err != nil {
			return redo(err)
		}
	}
	return r.record(ctx, op, orig, s)
}

// staleRead tells whether the operation changed on the API server since op was read.
func (r *Reconciler) staleRead(ctx context.Context, op *v1alpha2.VirtualMachineOperation) (bool, error) {
	fresh := &v1alpha2.VirtualMachineOperation{}
	if err := r.reader().Get(ctx, client.ObjectKeyFromObject(op), fresh); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return fresh.ResourceVersion != op.ResourceVersion, nil
}

// redo ends a pass that failed. A conflict that outlasted patchVMState's retries (the VM
// written again and again meanwhile) is no error: the pass is redone from fresh reads,
// paced by the queue's back-off.
func redo(err error) (ctrl.Result, error) {
	if apierrors.IsConflict(err) {
		return ctrl.Result{Requeue: true}, nil
	}
	return ctrl.Result{}, err
}

// routine are the reasons every migration steps through: the VM's MigrationStarted and
// Migrated events and the operation's first and last say as much. An event each was four
// of a migration's ~55 API writes.
var routine = map[string]bool{
	v1alpha2.ReasonTargetScheduling: true,
	v1alpha2.ReasonTargetPreparing:  true,
	v1alpha2.ReasonSyncing:          true,
	v1alpha2.ReasonSourceSuspended:  true,
	v1alpha2.ReasonTargetResumed:    true,
}

// record writes the step to the operation's status, with an event when the operation
// starts or ends, or its reason changes to one that is not routine.
func (r *Reconciler) record(ctx context.Context, op, orig *v1alpha2.VirtualMachineOperation, s step) (ctrl.Result, error) {
	status := metav1.ConditionFalse
	if s.opPhase == v1alpha2.OpCompleted {
		status = metav1.ConditionTrue
	}
	prev := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted)
	changed := prev == nil || prev.Reason != s.reason || op.Status.Phase != s.opPhase
	// An event when the operation starts, ends, or waits on something unusual; not for
	// each routine step between (they are in the status while they last, and in the log).
	newsworthy := changed && (prev == nil || op.Status.Phase != s.opPhase || !routine[s.reason])
	op.Status.Phase = s.opPhase
	op.Status.Progress = progressAfter(s, op.Status.Progress)
	op.Status.ObservedGeneration = op.Generation
	meta.SetStatusCondition(&op.Status.Conditions, metav1.Condition{
		Type: v1alpha2.OpConditionCompleted, Status: status, Reason: s.reason, Message: s.message, ObservedGeneration: op.Generation,
	})
	if equality.Semantic.DeepEqual(orig.Status, op.Status) {
		// Nothing to write (an operation that still waits): no request at all.
		return ctrl.Result{RequeueAfter: s.requeue}, nil
	}
	if err := r.Client.Status().Patch(ctx, op, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		r.slots.drop(op.UID)
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil // read a stale operation: redo the step
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if newsworthy {
		kind := corev1.EventTypeNormal
		if s.opPhase == v1alpha2.OpFailed {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(op, kind, s.reason, "%s", s.message)
	}
	if changed {
		ctrl.LoggerFrom(ctx).Info("Migration stepped", "phase", op.Status.Migration.Phase, "reason", s.reason, "message", s.message)
	}
	if op.Finished() {
		if err := r.release(ctx, op); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

// release drops the finalizer of an ended operation.
func (r *Reconciler) release(ctx context.Context, op *v1alpha2.VirtualMachineOperation) error {
	if controllerutil.ContainsFinalizer(op, finalizer) {
		// A target no pass adopted (its creation's status write was lost) must not outlive
		// the operation.
		if err := r.deleteTargets(ctx, op); err != nil {
			return err
		}
	}
	if controllerutil.RemoveFinalizer(op, finalizer) {
		return client.IgnoreNotFound(r.Client.Update(ctx, op))
	}
	return nil
}
