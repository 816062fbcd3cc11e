package migration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
	"github.com/ferryvm/ferry/internal/controller/vmclass"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// pending checks preconditions, waits for a slot and creates the target pod.
func (r *Reconciler) pending(ctx context.Context, op *v1alpha2.VirtualMachineOperation) (step, error) {
	vm := &v1alpha2.VirtualMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: op.Spec.VirtualMachineName}, vm); err != nil {
		if apierrors.IsNotFound(err) {
			return fail(v1alpha2.ReasonVMNotFound, "VirtualMachine %s not found in namespace %s", op.Spec.VirtualMachineName, op.Namespace), nil
		}
		return step{}, err
	}
	if other, err := r.otherMigration(ctx, op); err != nil {
		return step{}, err
	} else if other != "" {
		return fail(v1alpha2.ReasonOtherMigration, "VM %s is already being migrated by VirtualMachineOperation %s", vm.Name, other), nil
	}
	ac, err := autoConverge(vm.Spec.LiveMigrationPolicy, op.Spec.Force)
	if err != nil {
		return fail(v1alpha2.ReasonForceNotAllowed, "%v", err), nil
	}
	// This operation may have started the migration already: a controller that died between
	// writing the VM's migration state and the operation's status left the VM Migrating
	// towards this operation's target pod. Take it up again instead of failing the operation
	// over its own migration (which would leave the VM Migrating for good).
	if resumed, err := r.resume(ctx, op, vm, ac); err != nil || resumed.opPhase != "" {
		return resumed, err
	}
	// No operation is migrating the VM (otherMigration said so) and the target its state
	// names is gone: the state was left open by an operation that ended without closing
	// it. Close it, so the VM shows Running again and this operation can go on.
	if st := vm.Status.MigrationState; st != nil && st.StartTimestamp != nil && st.EndTimestamp == nil {
		t, err := r.pod(ctx, vm.Namespace, st.Target.Pod)
		if err != nil {
			return step{}, err
		}
		if t == nil || !t.DeletionTimestamp.IsZero() || launcherpod.Ended(t) {
			now, gone := metav1.NewTime(r.Now()), st.Target.Pod
			// Redone on a newer VM (patchVMState), it closes only the state it was about.
			if err := r.patchVMState(ctx, vm, func(st *v1alpha2.MigrationState) {
				if st.EndTimestamp == nil && st.Target.Pod == gone {
					st.EndTimestamp, st.Result = &now, v1alpha2.MigrationFailed
				}
			}); err != nil {
				return step{}, err
			}
			ctrl.LoggerFrom(ctx).Info("Closed a migration state no operation owns", "vm", vm.Name, "target", gone)
			op.Status.Phase = v1alpha2.OpPending
			return step{opPhase: v1alpha2.OpPending, reason: v1alpha2.ReasonMigrationPending,
				message: "closed a migration of VM " + vm.Name + " that an earlier operation left open", requeue: time.Second}, nil
		}
	}
	if st := vm.Status.MigrationState; vm.Status.Phase == v1alpha2.MachineMigrating && st != nil && st.EndTimestamp != nil {
		// The migration ended; the VM's phase has not followed yet.
		op.Status.Phase = v1alpha2.OpPending
		return step{opPhase: v1alpha2.OpPending, reason: v1alpha2.ReasonMigrationPending,
			message: "waiting for VM " + vm.Name + " to show the end of its last migration", requeue: time.Second}, nil
	}
	// A VM being started (again) runs in a moment: the migration waits for it rather than
	// fail, e.g. an Evict right after ferry up resumed, or after a node restarted.
	if startsSoon(vm) {
		return waitForRun(op, fmt.Sprintf("VM %s is %s", vm.Name, vm.Status.Phase)), nil
	}
	if vm.Spec.RunPolicy == v1alpha2.AlwaysOff || vm.Status.Phase != v1alpha2.MachineRunning {
		return fail(v1alpha2.ReasonNotApplicableState, "VM %s is %s: only a Running VM can be migrated", vm.Name, vm.Status.Phase), nil
	}
	source, err := r.sourcePod(ctx, vm)
	if err != nil {
		return step{}, err
	}
	if source == nil || source.Spec.NodeName == "" || !launcherpod.GuestRunning(source) {
		// Running, says the VM's status, which has not caught up with its pod yet (the pod
		// ended and the VM is to start again, or a new pod is starting): its next phase
		// decides.
		return waitForRun(op, fmt.Sprintf("VM %s has no running launcher pod yet", vm.Name)), nil
	}
	if why, err := r.refuseTarget(ctx, op, vm, source); err != nil {
		return step{}, err
	} else if why != "" {
		return fail(v1alpha2.ReasonTargetUnschedulable, "%s", why), nil
	}
	if why := hotplugBusy(source); why != "" {
		// The target must start with the disks the source's QEMU has: wait until they stop
		// changing (a hot-plug takes seconds). The pod's annotations wake this up.
		op.Status.Phase = v1alpha2.OpPending
		return step{opPhase: v1alpha2.OpPending, reason: v1alpha2.ReasonMigrationPending,
			message: "waiting for a disk hot-plug of VM " + vm.Name + " to finish: " + why, requeue: 2 * time.Second}, nil
	}
	if why, err := r.takeSlot(ctx, op, source.Spec.NodeName); err != nil {
		return step{}, err
	} else if why != "" {
		// The end of a migration from the same node wakes this one (waitersOf); the timer
		// only backs that up, so that thousands of waiting operations do not crowd out the
		// running ones in the queue.
		op.Status.Phase = v1alpha2.OpPending
		op.Status.Migration.SourceNode = source.Spec.NodeName
		return step{opPhase: v1alpha2.OpPending, reason: v1alpha2.ReasonWaitingForSyncSlot, message: why, requeue: slotRetry}, nil
	}

	// A target made by an earlier pass whose status write was lost is adopted, not doubled.
	targets, err := r.targetsOf(ctx, op)
	if err != nil {
		return step{}, err
	}
	var target *corev1.Pod
	for i := range targets {
		if targets[i].DeletionTimestamp.IsZero() && !launcherpod.Ended(&targets[i]) {
			target = &targets[i]
			break
		}
	}
	if target == nil {
		// Placed as the VM's class places it now (the CPU is the source's: its arguments).
		class, err := vmclass.Of(ctx, r.Client, vm)
		if err != nil {
			return step{}, err
		}
		target = targetPod(op, source, vmclass.Effective(vm, class))
		if err := r.Client.Create(ctx, target); err != nil {
			return step{}, fmt.Errorf("creating the target pod: %w", err)
		}
	}
	now := metav1.NewTime(r.Now())
	ms := op.Status.Migration
	ms.Phase = v1alpha2.MigrationScheduling
	ms.SourceNode, ms.SourcePod, ms.TargetPod = source.Spec.NodeName, source.Name, target.Name
	ms.AutoConverge, ms.StartTime = ac, &now
	if err := r.patchVMState(ctx, vm, func(st *v1alpha2.MigrationState) {
		*st = v1alpha2.MigrationState{StartTimestamp: &now,
			Source: v1alpha2.MigrationEndpoint{Node: source.Spec.NodeName, Pod: source.Name},
			Target: v1alpha2.MigrationEndpoint{Pod: target.Name}}
	}); err != nil {
		return step{}, err
	}
	r.Recorder.Eventf(vm, corev1.EventTypeNormal, "MigrationStarted", "Migrating from node %s (operation %s)", source.Spec.NodeName, op.Name)
	return wait(v1alpha2.ReasonTargetScheduling, fmt.Sprintf("waiting for a node for target pod %s", target.Name), time.Second), nil
}

// resume takes up a migration this operation started before its status was written: the
// VM's migration state is open and names a live target pod of this operation. It returns a
// zero step when there is none.
func (r *Reconciler) resume(ctx context.Context, op *v1alpha2.VirtualMachineOperation, vm *v1alpha2.VirtualMachine, ac bool) (step, error) {
	st := vm.Status.MigrationState
	if st == nil || st.StartTimestamp == nil || st.EndTimestamp != nil || st.Target.Pod == "" {
		return step{}, nil
	}
	targets, err := r.targetsOf(ctx, op)
	if err != nil {
		return step{}, err
	}
	for i := range targets {
		t := &targets[i]
		if t.Name != st.Target.Pod || !t.DeletionTimestamp.IsZero() || launcherpod.Ended(t) {
			continue
		}
		ms := op.Status.Migration
		ms.Phase = v1alpha2.MigrationScheduling
		ms.SourceNode, ms.SourcePod, ms.TargetPod = st.Source.Node, st.Source.Pod, t.Name
		ms.AutoConverge, ms.StartTime = ac, st.StartTimestamp
		ctrl.LoggerFrom(ctx).Info("Resuming a migration this operation started before its status was recorded", "target", t.Name, "source", st.Source.Pod)
		return wait(v1alpha2.ReasonTargetScheduling, fmt.Sprintf("resumed: waiting for a node for target pod %s", t.Name), time.Second), nil
	}
	return step{}, nil
}

// scheduling waits for the scheduler to place the target pod.
func (r *Reconciler) scheduling(ctx context.Context, op *v1alpha2.VirtualMachineOperation) (step, error) {
	ms := op.Status.Migration
	target, err := r.pod(ctx, op.Namespace, ms.TargetPod)
	if err != nil {
		return step{}, err
	}
	if target == nil || !target.DeletionTimestamp.IsZero() {
		return fail(v1alpha2.ReasonTargetFailed, "target pod %s disappeared", ms.TargetPod), nil
	}
	if target.Spec.NodeName != "" {
		ms.TargetNode = target.Spec.NodeName
		ms.Phase = v1alpha2.MigrationPreparing
		return wait(v1alpha2.ReasonTargetPreparing, preparingText(target), time.Second), nil
	}
	why, reason := "waiting for the scheduler", v1alpha2.ReasonTargetScheduling
	for _, c := range target.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			why = c.Message
			if c.Reason == corev1.PodReasonUnschedulable {
				reason = v1alpha2.ReasonTargetUnschedulable
			}
		}
	}
	cfg, _ := r.effective(ctx)
	if r.Now().Sub(ms.StartTime.Time) > cfg.SchedulingTimeout {
		return fail(v1alpha2.ReasonTargetUnschedulable, "no node can take VM %s within %s: %s", op.Spec.VirtualMachineName, cfg.SchedulingTimeout, why), nil
	}
	return wait(reason, fmt.Sprintf("target pod %s/%s not placed yet: %s", target.Namespace, target.Name, why), 2*time.Second), nil
}

// preparing waits for the target's QEMU to listen, then asks the source to migrate.
func (r *Reconciler) preparing(ctx context.Context, op *v1alpha2.VirtualMachineOperation) (step, error) {
	ms := op.Status.Migration
	target, err := r.pod(ctx, op.Namespace, ms.TargetPod)
	if err != nil {
		return step{}, err
	}
	if target == nil || !target.DeletionTimestamp.IsZero() || launcherpod.Ended(target) {
		return fail(v1alpha2.ReasonTargetFailed, "target pod %s failed before the transfer: %s", ms.TargetPod, launcherpod.EndMessage(target)), nil
	}
	uri := target.Annotations[v1alpha2.AnnotationIncomingURI]
	if uri == "" {
		if r.Now().Sub(ms.StartTime.Time) > r.Config.SchedulingTimeout+r.Config.ProgressTimeout {
			return fail(v1alpha2.ReasonTargetFailed, "target pod %s did not get ready to receive", target.Name), nil
		}
		return wait(v1alpha2.ReasonTargetPreparing, preparingText(target), time.Second), nil
	}
	if why, err := r.takeInbound(ctx, op, target.Spec.NodeName); err != nil {
		return step{}, err
	} else if why != "" {
		return wait(v1alpha2.ReasonWaitingForSyncSlot, why, 2*time.Second), nil
	}
	vm := &v1alpha2.VirtualMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: op.Spec.VirtualMachineName}, vm); err != nil {
		return step{}, client.IgnoreNotFound(err)
	}
	cfg, err := r.effective(ctx)
	if err != nil {
		r.Recorder.Eventf(op, corev1.EventTypeWarning, "BadConfiguration", "%v; using the controller's settings", err)
	}
	req := v1alpha2.MigrationRequest{
		URI:                      uri,
		TargetNode:               target.Spec.NodeName,
		MaxBandwidthBytes:        cfg.MaxBandwidthBytes,
		DowntimeLimitMs:          cfg.DowntimeLimit.Milliseconds(),
		AutoConverge:             ms.AutoConverge,
		CompletionTimeoutSeconds: completionTimeout(vm, cfg.CompletionTimeoutPerGiB),
		ProgressTimeoutSeconds:   int64(cfg.ProgressTimeout.Seconds()),
		BlockDevices:             hotplugSlots(target),
	}
	b, _ := json.Marshal(req)
	// Clear what an earlier migration of this pod left behind in the same write.
	ann := map[string]any{v1alpha2.AnnotationMigrateTo: string(b), v1alpha2.AnnotationMigrationStatus: nil, v1alpha2.AnnotationMigrationAbort: nil}
	if err := r.annotate(ctx, op.Namespace, ms.SourcePod, ann); err != nil {
		if apierrors.IsNotFound(err) {
			return fail(v1alpha2.ReasonSourceFailed, "source pod %s disappeared", ms.SourcePod), nil
		}
		return step{}, err
	}
	now := metav1.NewTime(r.Now())
	ms.TransferStartTime = &now
	ms.Phase = v1alpha2.MigrationTransferring
	if err := r.patchVMState(ctx, vm, func(st *v1alpha2.MigrationState) { st.Target.Node = target.Spec.NodeName }); err != nil {
		return step{}, err
	}
	return wait(v1alpha2.ReasonSyncing, sentText(v1alpha2.MigrationProgress{}, target.Spec.NodeName), time.Second), nil
}

// preparingText is the message while the target pod starts: one text from its placement
// until its QEMU listens, as each change of it is a write of the operation's status.
func preparingText(target *corev1.Pod) string {
	return fmt.Sprintf("target pod %s starting on node %s; the transfer begins once its QEMU listens", target.Name, target.Spec.NodeName)
}

// completionTimeout scales with the guest's memory, at least one GiB's worth.
func completionTimeout(vm *v1alpha2.VirtualMachine, perGiB time.Duration) int64 {
	gib := float64(vm.Spec.Memory.Size.Value()) / (1 << 30)
	return int64(max(gib, 1) * perGiB.Seconds())
}

// transferring follows the source's report until the VM runs on the target.
func (r *Reconciler) transferring(ctx context.Context, op *v1alpha2.VirtualMachineOperation) (step, error) {
	ms := op.Status.Migration
	target, err := r.pod(ctx, op.Namespace, ms.TargetPod)
	if err != nil {
		return step{}, err
	}
	source, err := r.pod(ctx, op.Namespace, ms.SourcePod)
	if err != nil {
		return step{}, err
	}
	var prog v1alpha2.MigrationProgress
	if source != nil && target != nil {
		_ = json.Unmarshal([]byte(source.Annotations[v1alpha2.AnnotationMigrationStatus]), &prog)
		if prog.URI != target.Annotations[v1alpha2.AnnotationIncomingURI] {
			prog = v1alpha2.MigrationProgress{} // about an earlier migration
		}
	}
	// The source's launcher exits as soon as the target runs, maybe before its agent
	// reported "completed": a pod that ended as Migrated says the same.
	// Once the source has ended as Migrated the VM controller removes it, perhaps before this
	// controller looked: a source that is gone (or going) while the target's guest runs (its
	// pod is Ready only on a heartbeat, which a target has only once the migration
	// completed) is the same. Seen with simulated nodes, where a migration takes 200 ms.
	sourceGone := source == nil || !source.DeletionTimestamp.IsZero() || launcherpod.Ended(source)
	arrived := sourceGone && target != nil && !launcherpod.Ended(target) && target.DeletionTimestamp.IsZero() && launcherpod.GuestRunning(target)
	if ms.Phase == v1alpha2.MigrationDone || prog.Status == "completed" || (source != nil && launcherpod.MigratedAway(source)) || arrived {
		return r.completing(ctx, op, source, target, prog)
	}
	if target == nil || !target.DeletionTimestamp.IsZero() || launcherpod.Ended(target) {
		return fail(v1alpha2.ReasonTargetFailed, "target pod %s ended during the transfer: %s", ms.TargetPod, launcherpod.EndMessage(target)), nil
	}
	if source == nil || !source.DeletionTimestamp.IsZero() {
		// The source pod is gone, or going, and says no more how its launcher ended: after a
		// migration its ended pod may be evicted by a drain, or removed, before this
		// controller saw it end (100 × 30 scale bench: 2 of 750 evacuations were failed so,
		// and their guests, which had arrived, were started again from cold). The target
		// tells: its QEMU ends when the stream breaks (TargetFailed above), and it is Ready
		// only on the guest's heartbeat (arrived above).
		if ms.TransferStartTime != nil && r.Now().Sub(ms.TransferStartTime.Time) > r.Config.ProgressTimeout {
			return fail(v1alpha2.ReasonSourceFailed, "source pod %s ended during the transfer and the guest gave no heartbeat on node %s: %s", ms.SourcePod, ms.TargetNode, launcherpod.EndMessage(source)), nil
		}
		return wait(v1alpha2.ReasonSourceSuspended, fmt.Sprintf("source pod %s is gone; waiting for the guest's heartbeat on node %s", ms.SourcePod, ms.TargetNode), time.Second), nil
	}
	if launcherpod.Ended(source) && !launcherpod.MigratedAway(source) {
		return fail(v1alpha2.ReasonSourceFailed, "source pod %s ended during the transfer: %s", ms.SourcePod, launcherpod.EndMessage(source)), nil
	}
	switch prog.Status {
	case "failed", "cancelled":
		reason := v1alpha2.ReasonMigrationFailed
		if strings.Contains(prog.Error, "converge") || strings.Contains(prog.Error, "progress") {
			reason = v1alpha2.ReasonNotConverging
		}
		return fail(reason, "migration %s: %s", prog.Status, prog.Error), nil
	}
	if prog.Status == "device" {
		// QEMU's last stage: the guest is paused while its devices' state goes across.
		return wait(v1alpha2.ReasonSourceSuspended, fmt.Sprintf("the source paused the guest to hand it to node %s", ms.TargetNode), time.Second), nil
	}
	s := wait(v1alpha2.ReasonSyncing, sentText(prog, ms.TargetNode), 2*time.Second)
	if notConverging(ms, prog, r.Now()) {
		s.reason = v1alpha2.ReasonNotConverging
		s.message = "Migration is not converging: data remaining is not decreasing at maximum throttle; " + s.message
	}
	prev, _ := parsePercent(op.Status.Progress)
	s.progress = syncProgress(prev, prog, r.Now().Sub(ms.TransferStartTime.Time))
	return s, nil
}

// recordFigures keeps QEMU's transfer time and downtime of a completed migration in the
// operation's status, from the source's report, or else from the source pod's termination
// message: the source's launcher exits the moment the migration completes, often before
// its node's agent relayed the report, so the first look may find neither and a later one
// the message. A TransferMs of 0 means not known yet (a real transfer takes longer).
func recordFigures(ms *v1alpha2.OperationMigrationStatus, source *corev1.Pod, prog v1alpha2.MigrationProgress) {
	if ms.TransferMs > 0 {
		return
	}
	if prog.Status == "completed" && prog.TotalTimeMs > 0 {
		ms.DowntimeMs, ms.TransferMs = prog.DowntimeMs, prog.TotalTimeMs
		return
	}
	if total, downtime, ok := launcherpod.MigrationFigures(source); ok {
		ms.DowntimeMs, ms.TransferMs = downtime.Milliseconds(), total.Milliseconds()
	}
}

// completing hands the VM to the target pod and ends the operation when the guest's
// heartbeat comes from the target.
func (r *Reconciler) completing(ctx context.Context, op *v1alpha2.VirtualMachineOperation, source, target *corev1.Pod, prog v1alpha2.MigrationProgress) (step, error) {
	ms := op.Status.Migration
	ms.Phase = v1alpha2.MigrationDone
	recordFigures(ms, source, prog)
	if target == nil || launcherpod.Ended(target) {
		return fail(v1alpha2.ReasonTargetFailed, "the VM moved to pod %s, which then ended: %s", ms.TargetPod, launcherpod.EndMessage(target)), nil
	}
	if _, isTarget := target.Labels[v1alpha2.LabelMigrationTarget]; isTarget {
		// Promote: from now on the VM controller treats the target as the VM's pod.
		if err := r.annotateLabels(ctx, target, map[string]any{v1alpha2.LabelMigrationTarget: nil}); err != nil {
			return step{}, err
		}
	}
	if !launcherpod.GuestRunning(target) {
		if r.Now().Sub(ms.TransferStartTime.Time) > r.Config.ProgressTimeout {
			return fail(v1alpha2.ReasonTargetFailed, "the guest gave no heartbeat on node %s after the transfer", ms.TargetNode), nil
		}
		return wait(v1alpha2.ReasonSourceSuspended, fmt.Sprintf("transfer completed (downtime %d ms); waiting for the guest's heartbeat on node %s", ms.DowntimeMs, ms.TargetNode), time.Second), nil
	}
	vm := &v1alpha2.VirtualMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: op.Spec.VirtualMachineName}, vm); err != nil {
		if !apierrors.IsNotFound(err) {
			return step{}, err
		}
		now := metav1.NewTime(r.Now())
		ms.EndTime = &now
		return step{opPhase: v1alpha2.OpCompleted, reason: v1alpha2.ReasonMigrationCompleted,
			message: fmt.Sprintf("VM %s migrated to node %s and was then deleted", op.Spec.VirtualMachineName, ms.TargetNode)}, nil
	}
	if st := vm.Status.MigrationState; st == nil || st.EndTimestamp == nil {
		now := metav1.NewTime(r.Now())
		if err := r.patchVMState(ctx, vm, func(st *v1alpha2.MigrationState) {
			st.EndTimestamp, st.Result = &now, v1alpha2.MigrationSucceeded
			st.Target = v1alpha2.MigrationEndpoint{Node: ms.TargetNode, Pod: ms.TargetPod}
		}); err != nil {
			return step{}, err
		}
		r.Recorder.Eventf(vm, corev1.EventTypeNormal, "Migrated", "Migrated from node %s to node %s (%s)", ms.SourceNode, ms.TargetNode, figuresText(ms))
	}
	if vm.Status.NodeName != ms.TargetNode || vm.Status.Phase != v1alpha2.MachineRunning {
		// The operation ends once the VM's own status says where it runs now, so whoever
		// saw it Completed and reads the VM next finds the new node.
		// The VM's change wakes the operation (arrivedOpsOfVM); the requeue is a fallback.
		return wait(v1alpha2.ReasonTargetResumed, fmt.Sprintf("the guest runs on node %s; waiting for the VM's status to follow", ms.TargetNode), time.Second), nil
	}
	now := *vm.Status.MigrationState.EndTimestamp
	ms.EndTime = &now
	migrationsTotal.WithLabelValues(string(v1alpha2.MigrationSucceeded)).Inc()
	migrationDuration.Observe(now.Sub(ms.StartTime.Time).Seconds())
	if ms.TransferMs > 0 {
		migrationDowntime.Observe(float64(ms.DowntimeMs) / 1000)
	}
	return step{opPhase: v1alpha2.OpCompleted, reason: v1alpha2.ReasonMigrationCompleted,
		message: fmt.Sprintf("VM %s migrated from node %s to node %s (%s)", op.Spec.VirtualMachineName, ms.SourceNode, ms.TargetNode, figuresText(ms))}, nil
}

// figuresText: "transfer 1250 ms, downtime 41 ms", or that the source did not report them
// (rather than a downtime of 0 ms it did not have).
func figuresText(ms *v1alpha2.OperationMigrationStatus) string {
	if ms.TransferMs == 0 {
		return "transfer time and downtime not reported by the source"
	}
	return fmt.Sprintf("transfer %d ms, downtime %d ms", ms.TransferMs, ms.DowntimeMs)
}

// cleanupFailed removes the target and the source's migration request, so the VM keeps
// running on the source, and records the result on the VM.
func (r *Reconciler) cleanupFailed(ctx context.Context, op *v1alpha2.VirtualMachineOperation, s step) error {
	ms := op.Status.Migration
	if ms == nil || ms.TargetPod == "" {
		migrationsTotal.WithLabelValues(string(v1alpha2.MigrationFailed)).Inc()
		return nil
	}
	if ms.Phase == v1alpha2.MigrationTransferring {
		if err := r.annotate(ctx, op.Namespace, ms.SourcePod, map[string]any{v1alpha2.AnnotationMigrationAbort: "true"}); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	if ms.Phase != v1alpha2.MigrationDone {
		if err := r.deleteTargets(ctx, op); err != nil {
			return err
		}
	}
	now := metav1.NewTime(r.Now())
	ms.EndTime = &now
	vm := &v1alpha2.VirtualMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: op.Namespace, Name: op.Spec.VirtualMachineName}, vm); err == nil {
		if err := r.patchVMState(ctx, vm, func(st *v1alpha2.MigrationState) {
			// Another operation's migration is not this one's to close.
			if st.Target.Pod == "" || st.Target.Pod == ms.TargetPod {
				st.EndTimestamp, st.Result = &now, v1alpha2.MigrationFailed
			}
		}); err != nil {
			return err
		}
		r.Recorder.Eventf(vm, corev1.EventTypeWarning, "MigrationFailed", "Migration by %s failed (%s): %s; the VM stays on node %s", op.Name, s.reason, s.message, ms.SourceNode)
	}
	result := string(v1alpha2.MigrationFailed)
	if s.reason == v1alpha2.ReasonAborted {
		result = v1alpha2.ReasonAborted
	}
	migrationsTotal.WithLabelValues(result).Inc()
	return nil
}

// abort cancels a migration whose operation is being deleted: the source is told to stop,
// the target pod goes away, the VM stays where it was.
func (r *Reconciler) abort(ctx context.Context, op *v1alpha2.VirtualMachineOperation) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(op, finalizer) {
		return ctrl.Result{}, nil
	}
	if uninstall.Terminating(ctx, r.APIReader, uninstall.CRDOperations) {
		// Ferry is being uninstalled: a migration target goes with its VM.
		ctrl.LoggerFrom(ctx).Info("The VirtualMachineOperation CRD is being deleted: releasing the operation without clean-up")
		return ctrl.Result{}, uninstall.Release(ctx, r.Client, op)
	}
	if !op.Finished() && op.Status.Migration != nil && op.Status.Phase != v1alpha2.OpTerminating {
		s := fail(v1alpha2.ReasonAborted, "cancelled: the operation was deleted")
		if err := r.cleanupFailed(ctx, op, s); err != nil {
			return redo(err)
		}
		r.Recorder.Eventf(op, corev1.EventTypeWarning, v1alpha2.ReasonAborted, "Migration cancelled; the VM stays on node %s", op.Status.Migration.SourceNode)
		// Terminating, as Deckhouse shows an operation being deleted, until its target
		// pod is gone and the finalizer goes.
		orig := op.DeepCopy()
		op.Status.Phase = v1alpha2.OpTerminating
		meta.SetStatusCondition(&op.Status.Conditions, metav1.Condition{Type: v1alpha2.OpConditionCompleted, Status: metav1.ConditionFalse,
			Reason: s.reason, Message: s.message, ObservedGeneration: op.Generation})
		if err := r.Client.Status().Patch(ctx, op, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			if apierrors.IsNotFound(err) {
				return ctrl.Result{}, nil
			}
			return redo(err) // a conflict: the clean-up, which is idempotent, is redone from a fresh read
		}
	}
	if ms := op.Status.Migration; ms != nil && ms.Phase != v1alpha2.MigrationDone && !op.Finished() {
		if targets, err := r.targetsOf(ctx, op); err != nil {
			return ctrl.Result{}, err
		} else if len(targets) > 0 {
			return ctrl.Result{RequeueAfter: time.Second}, nil // wait until the target is gone
		}
	}
	return ctrl.Result{}, r.release(ctx, op)
}
