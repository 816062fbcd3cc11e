package evacuation

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/power"
	"github.com/ferryvm/ferry/internal/controller/vmclass"
)

// Backoff bounds the wait between failed evacuations of one VM: First after the first
// failure, doubling, at most Max.
type Backoff struct {
	First, Max time.Duration
}

// DefaultBackoff waits 10 s, 20 s, 40 s ... up to 5 minutes.
var DefaultBackoff = Backoff{First: 10 * time.Second, Max: 5 * time.Minute}

// After is the wait after n consecutive failures (n ≥ 1).
func (b Backoff) After(n int) time.Duration {
	d := b.First
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// failuresBeforeUnmigratable consecutive failed evacuations make a VM Migratable=False.
const failuresBeforeUnmigratable = 3

// Reconciler turns a VM's evacuation mark into evacuation operations and keeps its
// Migratable condition.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Backoff  Backoff
	Now      func() time.Time
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Backoff.First == 0 {
		r.Backoff = DefaultBackoff
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachine{}).
		Watches(&v1alpha2.VirtualMachineOperation{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			op := o.(*v1alpha2.VirtualMachineOperation)
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: op.Namespace, Name: op.Spec.VirtualMachineName}}}
		})).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.allVMs), builder.WithPredicates(placementChanged())).
		Named("evacuation").
		// VMs are independent here (each has at most one operation in flight, and one VM
		// never reconciles twice at once): a drain of many nodes marks thousands at once.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

// placementChanged passes node events that can change where VMs may go: not the
// heartbeats that update a node's status every few seconds.
func placementChanged() predicate.Funcs {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			a, b := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
			return a.Spec.Unschedulable != b.Spec.Unschedulable || nodeReady(a) != nodeReady(b) ||
				fmt.Sprint(a.Spec.Taints) != fmt.Sprint(b.Spec.Taints) || fmt.Sprint(a.Labels) != fmt.Sprint(b.Labels)
		},
	}
}

func (r *Reconciler) allVMs(ctx context.Context, _ client.Object) []reconcile.Request {
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(vms.Items))
	for i := range vms.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vms.Items[i])})
	}
	return out
}

// State is what Ferry knows about moving one VM off its node.
type State struct {
	Assessment
	// Pod is the VM's active launcher pod.
	Pod *corev1.Pod
	// InFlight is the VM's unfinished migration operation.
	InFlight *v1alpha2.VirtualMachineOperation
	// Cancelled is an evacuation operation someone is deleting: that cancels the evacuation.
	Cancelled *v1alpha2.VirtualMachineOperation
	// Failures counts the evacuations that failed in a row, the last one LastFailure.
	Failures    int
	LastFailure *v1alpha2.VirtualMachineOperation
	// NextTry is when the next evacuation may start after failures (zero: now).
	NextTry time.Time
}

// Observe gathers the State of vm from c, a plain client (the CLI) or a cache.
func Observe(ctx context.Context, c client.Reader, vm *v1alpha2.VirtualMachine, b Backoff) (State, error) {
	return observe(ctx, c, vm, b, false)
}

// observeIndexed is Observe on the manager's cache, which indexes operations by VM
// (power.IndexOperations): it reads the VM's operations, not every one of its namespace.
func observeIndexed(ctx context.Context, c client.Reader, vm *v1alpha2.VirtualMachine, b Backoff) (State, error) {
	return observe(ctx, c, vm, b, true)
}

func observe(ctx context.Context, c client.Reader, vm *v1alpha2.VirtualMachine, b Backoff, indexed bool) (State, error) {
	var s State
	for _, p := range vm.Status.VirtualMachinePods {
		if !p.Active {
			continue
		}
		pod := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: p.Name}, pod); err == nil {
			s.Pod = pod
		} else if !apierrors.IsNotFound(err) {
			return s, err
		}
	}
	// Every node and launcher pod, only read (Assess): from a cache, without a copy of each
	// per VM (a plain client ignores the option).
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return s, err
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.HasLabels{v1alpha2.LabelLauncher}, client.UnsafeDisableDeepCopy); err != nil {
		return s, err
	}
	// The VM's placement with its class's.
	class, err := vmclass.Of(ctx, c, vm)
	if err != nil {
		return s, err
	}
	s.Assessment = Assess(vmclass.Effective(vm, class), s.Pod, nodes.Items, pods.Items)

	var ops v1alpha2.VirtualMachineOperationList
	opts := []client.ListOption{client.InNamespace(vm.Namespace)}
	if indexed {
		opts = append(opts, client.MatchingFields{power.IndexVMName: vm.Name})
	}
	// Filtered below too: a plain client (the CLI) has no index.
	if err := c.List(ctx, &ops, opts...); err != nil {
		return s, err
	}
	var evacuations []*v1alpha2.VirtualMachineOperation
	for i := range ops.Items {
		op := &ops.Items[i]
		if op.Spec.VirtualMachineName != vm.Name || op.Spec.Type != v1alpha2.OpEvict && op.Spec.Type != v1alpha2.OpMigrate {
			continue
		}
		_, evacuation := op.Labels[v1alpha2.LabelEvacuation]
		switch {
		case !op.Finished() && op.DeletionTimestamp.IsZero():
			s.InFlight = op
		case !op.Finished() && evacuation:
			s.Cancelled = op
		}
		if evacuation && op.Finished() {
			evacuations = append(evacuations, op)
		}
	}
	sort.Slice(evacuations, func(i, j int) bool {
		return evacuations[i].CreationTimestamp.Before(&evacuations[j].CreationTimestamp)
	})
	for i := len(evacuations) - 1; i >= 0 && evacuations[i].Status.Phase == v1alpha2.OpFailed; i-- {
		s.Failures++
		if s.LastFailure == nil {
			s.LastFailure = evacuations[i]
		}
	}
	if s.LastFailure != nil {
		s.NextTry = endOf(s.LastFailure).Add(b.After(s.Failures))
	}
	return s, nil
}

func endOf(op *v1alpha2.VirtualMachineOperation) time.Time {
	if c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil {
		return c.LastTransitionTime.Time
	}
	return op.CreationTimestamp.Time
}

func failureText(op *v1alpha2.VirtualMachineOperation) string {
	if c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil {
		return c.Reason + ": " + c.Message
	}
	return string(op.Status.Phase)
}

// migratable is the VM's Migratable condition: the assessment, unless evacuations keep failing.
func (s State) migratable() (bool, string, string) {
	if s.Migratable && s.Failures >= failuresBeforeUnmigratable {
		return false, ReasonMigrationFails, fmt.Sprintf("the last %d evacuations failed, the last with %s", s.Failures, failureText(s.LastFailure))
	}
	return s.Migratable, s.Reason, s.Message
}

// Reconcile evacuates one VM if asked, and refreshes its Migratable condition.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	vm := &v1alpha2.VirtualMachine{}
	if err := r.Client.Get(ctx, req.NamespacedName, vm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !vm.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	s, err := observeIndexed(ctx, r.Client, vm, r.Backoff)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := r.Now()
	from := vm.Annotations[v1alpha2.AnnotationEvacuateFrom]
	res, err := r.evacuate(ctx, vm, s, from, now)
	if err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		return ctrl.Result{}, err
	}
	if err := r.setMigratable(ctx, vm, s); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return res, nil
}

// evacuate moves a VM marked for evacuation off its node: one operation at a time, with
// back-off after failures, until it runs elsewhere or its node is uncordoned.
func (r *Reconciler) evacuate(ctx context.Context, vm *v1alpha2.VirtualMachine, s State, from string, now time.Time) (ctrl.Result, error) {
	cond := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionEvictionRequired)
	if from == "" {
		if cond != nil {
			return ctrl.Result{}, r.clear(ctx, vm, "")
		}
		return ctrl.Result{}, nil
	}
	switch {
	case vm.Status.Phase == v1alpha2.MachineRunning && vm.Status.NodeName != "" && vm.Status.NodeName != from:
		return ctrl.Result{}, r.clear(ctx, vm, fmt.Sprintf("Moved off node %s: now on node %s", from, vm.Status.NodeName))
	case s.Pod == nil && s.InFlight == nil:
		return ctrl.Result{}, r.clear(ctx, vm, fmt.Sprintf("No longer runs on node %s", from))
	}
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: from}, node); apierrors.IsNotFound(err) {
		return ctrl.Result{}, r.clear(ctx, vm, fmt.Sprintf("Node %s is gone", from))
	} else if err != nil {
		return ctrl.Result{}, err
	}
	if cond != nil && cond.Reason == v1alpha2.ReasonNodeDrained && !node.Spec.Unschedulable {
		r.Recorder.Eventf(vm, corev1.EventTypeNormal, "EvacuationStopped", "Node %s was uncordoned: the VM is not moved off it", from)
		return ctrl.Result{}, r.clear(ctx, vm, "")
	}
	if s.Cancelled != nil && s.InFlight == nil {
		// Deleting the evacuation operation cancels the move; a drain that goes on asks again.
		r.Recorder.Eventf(vm, corev1.EventTypeNormal, "EvacuationCancelled", "Operation %s was deleted: the VM stays on node %s", s.Cancelled.Name, from)
		return ctrl.Result{}, r.clear(ctx, vm, "")
	}
	if s.InFlight != nil {
		return ctrl.Result{}, nil // its end wakes us up
	}
	if ok, reason, _ := s.migratable(); !ok && reason != ReasonMigrationFails {
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil // node changes wake us up sooner
	}
	if wait := s.NextTry.Sub(now); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	op := &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "evacuation-" + vm.Name + "-",
			Namespace:    vm.Namespace,
			Labels:       map[string]string{v1alpha2.LabelEvacuation: from},
		},
		Spec: v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: vm.Name},
	}
	if err := r.Client.Create(ctx, op); err != nil {
		return ctrl.Result{}, err
	}
	msg := fmt.Sprintf("Moving the VM off node %s (operation %s)", from, op.Name)
	if s.Failures > 0 {
		msg += fmt.Sprintf(", attempt %d after %s", s.Failures+1, failureText(s.LastFailure))
	}
	r.Recorder.Eventf(vm, corev1.EventTypeNormal, "EvacuationStarted", "%s", msg)
	ctrl.LoggerFrom(ctx).Info("Evacuation started", "operation", op.Name, "node", from, "failures", s.Failures)
	return ctrl.Result{}, nil
}

// clear ends an evacuation: the mark and the condition go, with an event saying why.
func (r *Reconciler) clear(ctx context.Context, vm *v1alpha2.VirtualMachine, why string) error {
	if _, ok := vm.Annotations[v1alpha2.AnnotationEvacuateFrom]; ok {
		patch := client.RawPatch(types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"annotations":{%q:null}}}`, v1alpha2.AnnotationEvacuateFrom))
		if err := r.Client.Patch(ctx, vm, patch); err != nil {
			return client.IgnoreNotFound(err)
		}
	}
	if meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionEvictionRequired) != nil {
		orig := vm.DeepCopy()
		meta.RemoveStatusCondition(&vm.Status.Conditions, v1alpha2.VMConditionEvictionRequired)
		if err := r.Client.Status().Patch(ctx, vm, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return client.IgnoreNotFound(err)
		}
	}
	if why != "" {
		r.Recorder.Eventf(vm, corev1.EventTypeNormal, "Evacuated", "%s", why)
	}
	return nil
}

// setMigratable keeps the Migratable condition, with an event when the VM stops being
// able to move.
func (r *Reconciler) setMigratable(ctx context.Context, vm *v1alpha2.VirtualMachine, s State) error {
	orig := vm.DeepCopy()
	ok, reason, msg := s.migratable()
	if reason == ReasonNotRunning && s.Pod == nil && NotMeantToRun(vm) {
		meta.RemoveStatusCondition(&vm.Status.Conditions, v1alpha2.VMConditionMigratable)
	} else {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		var prev *metav1.Condition
		if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionMigratable); c != nil {
			copied := *c // SetStatusCondition below changes the condition in place
			prev = &copied
		}
		if prev != nil && prev.Status == status && prev.Reason == reason && prev.Message == msg {
			return nil
		}
		meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{Type: v1alpha2.VMConditionMigratable, Status: status,
			Reason: reason, Message: msg, ObservedGeneration: vm.Generation})
		// A VM that is still starting is not news.
		if !ok && reason != ReasonNotRunning && (prev == nil || prev.Status != status || prev.Reason != reason) {
			r.Recorder.Eventf(vm, corev1.EventTypeWarning, "NotMigratable", "The VM cannot be live-migrated: %s", msg)
		}
	}
	if meta.FindStatusCondition(orig.Status.Conditions, v1alpha2.VMConditionMigratable) == nil &&
		meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionMigratable) == nil {
		return nil
	}
	return r.Client.Status().Patch(ctx, vm, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}
