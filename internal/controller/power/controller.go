package power

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
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
	vmctl "github.com/ferryvm/ferry/internal/controller/vm"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// IndexVMName indexes operations by spec.virtualMachineName.
const IndexVMName = "spec.virtualMachineName"

// Timeout bounds how long a power operation may take before it is failed.
const Timeout = 5 * time.Minute

// annotationRestartedPod on a Restart operation names the pod it ended.
const annotationRestartedPod = "virtualization.ferryvm.io/restarted-pod"

// Reconciler runs power operations.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Now      func() time.Time
}

func isPowerOp(t v1alpha2.OperationType) bool {
	return t == v1alpha2.OpStart || t == v1alpha2.OpStop || t == v1alpha2.OpRestart
}

// SetupWithManager registers the controller. The index on the VM name is shared with
// other operation controllers, so it is registered by IndexOperations.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	ops := predicate.NewPredicateFuncs(func(o client.Object) bool {
		op, ok := o.(*v1alpha2.VirtualMachineOperation)
		return ok && isPowerOp(op.Spec.Type)
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineOperation{}, builder.WithPredicates(ops)).
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(r.opsOfVM)).
		Named("vmop-power").
		Complete(r)
}

// IndexOperations registers the index of operations by VM name.
func IndexOperations(ctx context.Context, mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(ctx, &v1alpha2.VirtualMachineOperation{}, IndexVMName, func(o client.Object) []string {
		return []string{o.(*v1alpha2.VirtualMachineOperation).Spec.VirtualMachineName}
	})
}

func (r *Reconciler) opsOfVM(ctx context.Context, vm client.Object) []reconcile.Request {
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &ops, client.InNamespace(vm.GetNamespace()), client.MatchingFields{IndexVMName: vm.GetName()}); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, op := range ops.Items {
		if isPowerOp(op.Spec.Type) && !op.Finished() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&op)})
		}
	}
	return out
}

// outcome is what one step of an operation decided. signalled says the VM was told (its
// power state set, its pod ended): the SignalSent condition.
type outcome struct {
	phase     v1alpha2.OperationPhase
	reason    string
	message   string
	signalled bool
}

// inProgressReasons are Deckhouse's reasons of a power operation that was signalled and
// is not done yet.
var inProgressReasons = map[v1alpha2.OperationType]string{
	v1alpha2.OpStart:   v1alpha2.ReasonStartInProgress,
	v1alpha2.OpStop:    v1alpha2.ReasonStopInProgress,
	v1alpha2.OpRestart: v1alpha2.ReasonRestartInProgress,
}

func inProgress(t v1alpha2.OperationType, msg string) outcome {
	return outcome{v1alpha2.OpInProgress, inProgressReasons[t], msg, true}
}

func failed(reason, format string, args ...any) outcome {
	return outcome{phase: v1alpha2.OpFailed, reason: reason, message: fmt.Sprintf(format, args...)}
}

func completed(msg string) outcome {
	return outcome{v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted, msg, true}
}

// Reconcile moves one operation forward.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	op := &v1alpha2.VirtualMachineOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if op.Finished() || !op.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	vm := &v1alpha2.VirtualMachine{}
	var o outcome
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: op.Spec.VirtualMachineName}, vm)
	switch {
	case apierrors.IsNotFound(err):
		o = failed(v1alpha2.ReasonVMNotFound, "VirtualMachine %s not found in namespace %s", op.Spec.VirtualMachineName, op.Namespace)
	case err != nil:
		return ctrl.Result{}, err
	case !vm.DeletionTimestamp.IsZero():
		o = failed(v1alpha2.ReasonNotApplicableState, "VirtualMachine %s is being deleted (Terminating)", vm.Name)
	default:
		switch op.Spec.Type {
		case v1alpha2.OpStart:
			o, err = r.start(ctx, vm)
		case v1alpha2.OpStop:
			o, err = r.stop(ctx, op, vm)
		case v1alpha2.OpRestart:
			o, err = r.restart(ctx, op, vm)
		}
		if err != nil {
			return ctrl.Result{}, err
		}
	}
	if o.phase == v1alpha2.OpInProgress && r.Now().Sub(op.CreationTimestamp.Time) > Timeout {
		o = outcome{v1alpha2.OpFailed, v1alpha2.ReasonOperationFailed,
			fmt.Sprintf("%s did not finish within %s: %s", op.Spec.Type, Timeout, o.message), o.signalled}
	}
	return r.record(ctx, op, o)
}

// record writes the outcome to the operation's status, with an event on each change.
func (r *Reconciler) record(ctx context.Context, op *v1alpha2.VirtualMachineOperation, o outcome) (ctrl.Result, error) {
	orig := op.DeepCopy()
	status := metav1.ConditionFalse
	if o.phase == v1alpha2.OpCompleted {
		status = metav1.ConditionTrue
	}
	changed := op.Status.Phase != o.phase
	op.Status.Phase = o.phase
	// Deckhouse reports a progress for migrations only; an older Ferry wrote its message here.
	op.Status.Progress = ""
	op.Status.ObservedGeneration = op.Generation
	meta.SetStatusCondition(&op.Status.Conditions, metav1.Condition{
		Type: v1alpha2.OpConditionCompleted, Status: status, Reason: o.reason, Message: o.message, ObservedGeneration: op.Generation,
	})
	if o.signalled {
		meta.SetStatusCondition(&op.Status.Conditions, metav1.Condition{
			Type: v1alpha2.OpConditionSignalSent, Status: metav1.ConditionTrue, Reason: v1alpha2.ReasonSignalSentSuccess,
			Message: fmt.Sprintf("VM %s was told to %s", op.Spec.VirtualMachineName, strings.ToLower(string(op.Spec.Type))), ObservedGeneration: op.Generation,
		})
	}
	// Locked: an operation read before its last write is stepped again from a fresh read,
	// so its event is not sent twice and no older outcome is written over a newer one.
	if err := r.Client.Status().Patch(ctx, op, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if changed {
		kind := corev1.EventTypeNormal
		if o.phase == v1alpha2.OpFailed {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(op, kind, string(o.phase), "%s %s: %s", op.Spec.Type, o.phase, o.message)
	}
	if o.phase == v1alpha2.OpInProgress {
		// VM changes wake us; this only bounds the wait for the timeout.
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	}
	return ctrl.Result{}, nil
}

func (r *Reconciler) start(ctx context.Context, vm *v1alpha2.VirtualMachine) (outcome, error) {
	if vm.Spec.RunPolicy == v1alpha2.AlwaysOff {
		return failed(v1alpha2.ReasonNotApplicable, "VM %s has runPolicy AlwaysOff, which keeps it off: change runPolicy to start it", vm.Name), nil
	}
	if vm.Spec.RunPolicy != v1alpha2.AlwaysOn {
		if err := vmctl.SetPowerState(ctx, r.Client, vm, vmctl.PowerOn); err != nil {
			return outcome{}, err
		}
	}
	if vm.Status.Phase == v1alpha2.MachineRunning {
		return completed(fmt.Sprintf("VM %s is running on node %s", vm.Name, vm.Status.NodeName)), nil
	}
	return inProgress(v1alpha2.OpStart, fmt.Sprintf("starting VM %s (phase %s)", vm.Name, phaseOf(vm))), nil
}

func (r *Reconciler) stop(ctx context.Context, op *v1alpha2.VirtualMachineOperation, vm *v1alpha2.VirtualMachine) (outcome, error) {
	if vm.Spec.RunPolicy == v1alpha2.AlwaysOn {
		return failed(v1alpha2.ReasonNotApplicable, "VM %s has runPolicy AlwaysOn, which keeps it running: change runPolicy to stop it", vm.Name), nil
	}
	if vm.Spec.RunPolicy != v1alpha2.AlwaysOff {
		if err := vmctl.SetPowerState(ctx, r.Client, vm, vmctl.PowerOff); err != nil {
			return outcome{}, err
		}
	}
	if op.Spec.Force != nil && *op.Spec.Force {
		if err := r.deletePods(ctx, vm, 1); err != nil {
			return outcome{}, err
		}
	}
	if vm.Status.Phase == v1alpha2.MachineStopped {
		return completed(fmt.Sprintf("VM %s is stopped", vm.Name)), nil
	}
	return inProgress(v1alpha2.OpStop, fmt.Sprintf("stopping VM %s (phase %s)", vm.Name, phaseOf(vm))), nil
}

func (r *Reconciler) restart(ctx context.Context, op *v1alpha2.VirtualMachineOperation, vm *v1alpha2.VirtualMachine) (outcome, error) {
	if vm.Spec.RunPolicy == v1alpha2.AlwaysOff {
		return failed(v1alpha2.ReasonNotApplicable, "VM %s has runPolicy AlwaysOff: it cannot be restarted", vm.Name), nil
	}
	old := op.Annotations[annotationRestartedPod]
	active := activePod(vm)
	if old == "" {
		if active == "" {
			return failed(v1alpha2.ReasonNotApplicableState, "VM %s is %s, not running: use a Start operation", vm.Name, phaseOf(vm)), nil
		}
		// Remember the pod before ending it, so a controller restart knows the step is done.
		patch := client.MergeFrom(op.DeepCopy())
		if op.Annotations == nil {
			op.Annotations = map[string]string{}
		}
		op.Annotations[annotationRestartedPod] = active
		if err := r.Client.Patch(ctx, op, patch); err != nil {
			return outcome{}, err
		}
		grace := int64(-1)
		if op.Spec.Force != nil && *op.Spec.Force {
			grace = 1
		}
		if err := r.deletePods(ctx, vm, grace); err != nil {
			return outcome{}, err
		}
		return inProgress(v1alpha2.OpRestart, fmt.Sprintf("stopping launcher pod %s", active)), nil
	}
	if vm.Status.Phase == v1alpha2.MachineRunning && active != "" && active != old {
		return completed(fmt.Sprintf("VM %s restarted on node %s", vm.Name, vm.Status.NodeName)), nil
	}
	return inProgress(v1alpha2.OpRestart, fmt.Sprintf("restarting VM %s (phase %s)", vm.Name, phaseOf(vm))), nil
}

// deletePods ends the VM's live launcher pods; grace < 0 keeps the pod's own grace period.
func (r *Reconciler) deletePods(ctx context.Context, vm *v1alpha2.VirtualMachine, grace int64) error {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(vm.Namespace), client.MatchingFields{launcherpod.IndexVM: vm.Name}); err != nil {
		return err
	}
	var opts []client.DeleteOption
	if grace >= 0 {
		opts = append(opts, client.GracePeriodSeconds(grace))
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if ref := metav1.GetControllerOf(p); ref == nil || ref.UID != vm.UID {
			continue
		}
		if err := r.Client.Delete(ctx, p, opts...); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting launcher pod %s: %w", p.Name, err)
		}
	}
	return nil
}

func activePod(vm *v1alpha2.VirtualMachine) string {
	for _, p := range vm.Status.VirtualMachinePods {
		if p.Active {
			return p.Name
		}
	}
	return ""
}

func phaseOf(vm *v1alpha2.VirtualMachine) v1alpha2.MachinePhase {
	if vm.Status.Phase == "" {
		return v1alpha2.MachinePending
	}
	return vm.Status.Phase
}
