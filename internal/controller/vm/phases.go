package vm

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/vmclass"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// observePods sorts the VM's launcher pods into live, migration targets, terminating and
// ended ones. The oldest live pod is the active one: a promoted migration target takes over
// once the pod it migrated from has ended.
func (r *Reconciler) observePods(ctx context.Context, s *scope) error {
	pods, err := r.listPods(ctx, s.vm)
	if err != nil {
		return err
	}
	sort.Slice(pods, func(i, j int) bool {
		return pods[i].CreationTimestamp.Before(&pods[j].CreationTimestamp)
	})
	var live []*corev1.Pod
	for _, p := range pods {
		switch {
		case !p.DeletionTimestamp.IsZero():
			s.terminating = append(s.terminating, p)
		default:
			_, isTarget := p.Labels[v1alpha2.LabelMigrationTarget]
			if _, ended := podEnded(p); ended && isTarget {
				// A target that failed before taking over: the migration controller's to clean.
				continue
			}
			if _, ended := podEnded(p); ended {
				s.ended = append(s.ended, p)
			} else if _, target := p.Labels[v1alpha2.LabelMigrationTarget]; target {
				s.targets = append(s.targets, p)
			} else {
				live = append(live, p)
			}
		}
	}
	// A migration that succeeded put the VM in its target, though the source pod may still
	// show as running: a real kubelet reports its launcher's exit at its next sync of the
	// pod, seconds later. Until then the VM is the target's, not Starting on the source.
	if ms := s.vm.Status.MigrationState; ms != nil && ms.Result == v1alpha2.MigrationSucceeded && ms.Target.Pod != "" {
		for i, p := range live {
			if i > 0 && p.Name == ms.Target.Pod {
				live = append(append([]*corev1.Pod{p}, live[:i]...), live[i+1:]...)
				break
			}
		}
	}
	if n := len(live); n > 0 {
		s.active = live[0]
		s.extraActive = live[1:]
	}
	return nil
}

// handleEndedPods applies the runPolicy to pods that ended on their own (guest shutdown or
// crash), then removes them. A crash restart waits out a growing delay.
func (r *Reconciler) handleEndedPods(ctx context.Context, s *scope) error {
	vm := s.vm
	for _, p := range s.ended {
		if launcherpod.MigratedAway(p) || launcherpod.Superseded(p) {
			// The VM lives on in the pod it migrated to, or in the newer instance that
			// fenced this one: nothing ended. A migration still under way reads the source's
			// end first: removed before, it could not tell a migration from a crash.
			if watched, err := r.migrationReads(ctx, vm, p.Name); err != nil {
				return err
			} else if watched {
				s.handover = s.active == nil && len(s.targets) > 0
				continue
			}
			if err := r.Client.Delete(ctx, p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("removing migrated-away pod %s: %w", p.Name, err)
			}
			continue
		}
		outcome, _ := podEnded(p)
		recordOff, reason := afterEnd(vm.Spec.RunPolicy, outcome)
		s.lastEnd, s.lastEndCause = reason, launcherpod.EndMessage(p)
		if outcome == nodeFenced {
			s.fencedFrom = p.Spec.NodeName
			if recordOff {
				s.lastEndCause += fmt.Sprintf("; runPolicy %s does not start the VM elsewhere: start it with a Start operation (ferry v start)", vm.Spec.RunPolicy)
			} else {
				s.lastEndCause += fmt.Sprintf("; runPolicy %s starts the VM on another node", vm.Spec.RunPolicy)
			}
		}
		if recordOff {
			if err := r.setPower(ctx, vm, PowerOff); err != nil {
				return err
			}
			// The pod is the only record of why the VM stopped until the status says it:
			// it goes once a status write has kept the reason.
			if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionRunning); c == nil || c.Reason != reason {
				s.requeue = 100 * time.Millisecond
				continue
			}
		} else if outcome == crashed && s.active == nil {
			delay := restartDelay(vm.Status.RestartCount)
			if wait := endTime(p).Add(delay).Sub(r.Now()); wait > 0 {
				s.requeue = wait
				s.lastEnd = v1alpha2.ReasonRestartBackoff
				s.lastEndCause = fmt.Sprintf("%s; restarting in %s", launcherpod.EndMessage(p), wait.Round(1e9))
				return nil
			}
			vm.Status.RestartCount++
		}
		r.Recorder.Eventf(vm, corev1.EventTypeWarning, reason, "Launcher pod %s ended: %s", p.Name, launcherpod.EndMessage(p))
		if err := r.Client.Delete(ctx, p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("removing ended pod %s: %w", p.Name, err)
		}
		ctrl.LoggerFrom(ctx).Info("Removed ended launcher pod", "pod", p.Name, "reason", reason)
	}
	return nil
}

func endTime(p *corev1.Pod) time.Time {
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil && !t.FinishedAt.IsZero() {
			return t.FinishedAt.Time
		}
	}
	return p.CreationTimestamp.Time
}

// setPower records the power request on the VM (annotation).
func (r *Reconciler) setPower(ctx context.Context, vm *v1alpha2.VirtualMachine, power string) error {
	if vm.Annotations[v1alpha2.AnnotationPowerState] == power {
		return nil
	}
	return SetPowerState(ctx, r.Client, vm, power)
}

// applyPower starts or stops the VM's pod to match its runPolicy and power request.
func (r *Reconciler) applyPower(ctx context.Context, s *scope) error {
	vm := s.vm
	s.wantRun = shouldRun(vm.Spec.RunPolicy, vm.Annotations[v1alpha2.AnnotationPowerState])
	if !s.wantRun {
		for _, p := range append(append([]*corev1.Pod{s.active}, s.extraActive...), s.targets...) {
			if p == nil {
				continue
			}
			if err := r.Client.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("stopping pod %s: %w", p.Name, err)
			}
			r.Recorder.Eventf(vm, corev1.EventTypeNormal, "Stopping", "Stopping the VM: deleting launcher pod %s", p.Name)
		}
		return nil
	}
	if s.active != nil {
		if launcherpod.Ready(s.active) && s.active.Status.StartTime != nil && r.Now().Sub(s.active.Status.StartTime.Time) > stableAfter {
			vm.Status.RestartCount = 0
		}
		return nil
	}
	if r.createdPodUnseen(s) {
		s.requeue = 200 * time.Millisecond
		return nil
	}
	if len(s.terminating) > 0 || len(s.targets) > 0 || s.requeue > 0 || !s.disksReady || !s.ipReady || r.Network && !s.macReady || !s.provReady || !s.class.start || s.passthrough.blocked {
		// Never start a second instance while an old one may still run, or while the VM
		// is moving into a migration target.
		return nil
	}
	dev, err := r.launcherDevices(ctx)
	if err != nil {
		return err
	}
	token, err := r.nextFencingToken(ctx, vm)
	if err != nil {
		return err
	}
	var nic *podNIC
	if r.Network {
		// The guest's prefix length and gateway are those of the range its address is in.
		a, _ := netip.ParseAddr(vm.Status.IPAddress)
		rg, ok := r.Ranges.RangeOf(a)
		if !ok {
			return nil // useAddress said why in the IPAddressReady condition
		}
		nic = &podNIC{Address: netip.PrefixFrom(a, rg.Bits()).String(), Gateway: rg.Gateway().String()}
		// The MAC is the main interface's VirtualMachineMACAddress's (ensureMAC).
		if st := vm.MainNetworkStatus(); st != nil {
			nic.MAC = st.MACAddress
		}
	}
	// Built from the VM as its class completes it (placement, coreFraction), its QEMU given
	// the class's CPU.
	pod := launcherPod(vmclass.Effective(vm, s.class.class), s.disks, r.LauncherImage, token, nic, r.Node, dev)
	withClassCPU(pod, s.class.cpu)
	r.withHotplug(pod, s)
	if s.fencedFrom != "" {
		preferNotOn(pod, s.fencedFrom)
	}
	if err := r.Client.Create(ctx, pod); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
			// Admission refused the pod (a priorityClassName naming no PriorityClass, a
			// quota): the VM's status says why, and the start is tried again.
			s.lastEnd, s.lastEndCause = ReasonPodNotCreated, "the launcher pod was refused: "+err.Error()
			s.requeue = max(s.requeue, 15*time.Second)
			return nil
		}
		return fmt.Errorf("creating launcher pod: %w", err)
	}
	s.active = pod
	r.created.Store(vm.UID, createdPod{name: pod.Name, at: r.Now()})
	r.Recorder.Eventf(vm, corev1.EventTypeNormal, "Starting", "Created launcher pod %s", pod.Name)
	ctrl.LoggerFrom(ctx).Info("Created launcher pod", "pod", pod.Name)
	return nil
}

// nextFencingToken raises the VM's fencing token for a new start and records it on the VM
// before the pod exists, so no two launchers of the VM ever hold the same token.
func (r *Reconciler) nextFencingToken(ctx context.Context, vm *v1alpha2.VirtualMachine) (int64, error) {
	token, _ := strconv.ParseInt(vm.Annotations[v1alpha2.AnnotationFencingToken], 10, 64)
	token++
	cp := vm.DeepCopy()
	patch := client.MergeFromWithOptions(vm.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if cp.Annotations == nil {
		cp.Annotations = map[string]string{}
	}
	cp.Annotations[v1alpha2.AnnotationFencingToken] = strconv.FormatInt(token, 10)
	if err := r.Client.Patch(ctx, cp, patch); err != nil {
		return 0, fmt.Errorf("raising the fencing token of VM %s: %w", vm.Name, err)
	}
	if vm.Annotations == nil {
		vm.Annotations = map[string]string{}
	}
	vm.Annotations[v1alpha2.AnnotationFencingToken] = cp.Annotations[v1alpha2.AnnotationFencingToken]
	vm.ResourceVersion = cp.ResourceVersion
	return token, nil
}

// indexOpsByVM is the operations' cache index by spec.virtualMachineName (package power
// registers it).
const indexOpsByVM = "spec.virtualMachineName"

// migrationReads tells whether an unfinished migration of vm has pod as its source.
func (r *Reconciler) migrationReads(ctx context.Context, vm *v1alpha2.VirtualMachine, pod string) (bool, error) {
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &ops, client.InNamespace(vm.Namespace), client.MatchingFields{indexOpsByVM: vm.Name}); err != nil {
		return false, fmt.Errorf("listing the VM's operations: %w", err)
	}
	for _, op := range ops.Items {
		if !op.Finished() && op.Status.Migration != nil && op.Status.Migration.SourcePod == pod {
			return true, nil
		}
	}
	return false, nil
}

// createdPod is a launcher pod this controller created, and when.
type createdPod struct {
	name string
	at   time.Time
}

// createdPodWait bounds how long a created pod may stay unseen in the cache: one deleted
// before the cache ever showed it must not keep its VM from starting for good.
const createdPodWait = 30 * time.Second

// createdPodUnseen tells whether the pod this controller last created for the VM is missing
// from what the reconcile observed, i.e. the cache has not caught up with the create yet.
func (r *Reconciler) createdPodUnseen(s *scope) bool {
	v, ok := r.created.Load(s.vm.UID)
	if !ok {
		return false
	}
	c := v.(createdPod)
	for _, p := range append(append(append(append([]*corev1.Pod{s.active}, s.extraActive...), s.targets...), s.terminating...), s.ended...) {
		if p != nil && p.Name == c.name {
			r.created.Delete(s.vm.UID)
			return false
		}
	}
	if r.Now().Sub(c.at) > createdPodWait {
		r.created.Delete(s.vm.UID)
		return false
	}
	return true
}
