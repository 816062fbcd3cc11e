package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// guestFault returns the launcher pod's evidence that its guest cannot run — the guest
// panicked, or QEMU paused it on an I/O error — as the node agent put it in the pod's
// guest-ready gate. nil for a guest that runs or is not running yet.
func guestFault(p *corev1.Pod) *corev1.PodCondition {
	if p == nil || p.Status.Phase != corev1.PodRunning {
		return nil
	}
	c := launcherpod.Condition(p, v1alpha2.PodConditionGuestReady)
	if c != nil && c.Status == corev1.ConditionFalse && (c.Reason == v1alpha2.ReasonGuestPanicked || c.Reason == v1alpha2.ReasonGuestIOError) {
		return c
	}
	return nil
}

// guestAgent returns what the node agent last heard from the QEMU guest agent of the pod's
// guest: ok is false while the agent does not answer. The report is the guest's own words;
// a message that does not parse is an empty report.
func guestAgent(p *corev1.Pod) (report v1alpha2.GuestAgentReport, ok bool) {
	c := launcherpod.Condition(p, v1alpha2.PodConditionGuestAgent)
	if c == nil || c.Status != corev1.ConditionTrue {
		return report, false
	}
	if json.Unmarshal([]byte(c.Message), &report) != nil {
		report = v1alpha2.GuestAgentReport{}
	}
	return report, true
}

// handleGuestFault applies the runPolicy to a guest that panicked: AlwaysOn and
// AlwaysOnUnlessStoppedManually start it again (paced like a crash), once the status has
// shown the VM Degraded with the reason; Manual leaves it paused for its user to inspect,
// restart or stop. A guest paused on an I/O error is left as it is: restarting it would
// meet the same storage.
func (r *Reconciler) handleGuestFault(ctx context.Context, s *scope) error {
	vm, p := s.vm, s.active
	fault := guestFault(p)
	if fault == nil || fault.Reason != v1alpha2.ReasonGuestPanicked {
		return nil
	}
	if vm.Spec.RunPolicy != v1alpha2.AlwaysOn && vm.Spec.RunPolicy != v1alpha2.AlwaysOnUnlessStoppedManually {
		s.faultNote = fmt.Sprintf("; runPolicy %s leaves the guest paused for inspection: restart it (ferry v restart) or stop it", vm.Spec.RunPolicy)
		return nil
	}
	delay := restartDelay(vm.Status.RestartCount)
	s.faultNote = fmt.Sprintf("; runPolicy %s restarts it", vm.Spec.RunPolicy)
	if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionRunning); c == nil || c.Reason != v1alpha2.ReasonGuestPanicked {
		// Shown first, so that people and tools see why the VM restarts.
		s.requeue = 500 * time.Millisecond
		return nil
	}
	if wait := fault.LastTransitionTime.Add(delay).Sub(r.Now()); wait > 0 {
		s.requeue = wait
		s.faultNote = fmt.Sprintf("; runPolicy %s restarts it in %s", vm.Spec.RunPolicy, wait.Round(time.Second))
		return nil
	}
	// The restart is counted before the pod goes: counted after, a failed status write
	// would lose it while the restart went ahead, and the pacing with it.
	cp := vm.DeepCopy()
	cp.Status.RestartCount++
	if err := r.Client.Status().Patch(ctx, cp, client.MergeFromWithOptions(vm, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("counting the restart of the panicked guest: %w", err)
	}
	vm.Status.RestartCount, vm.ResourceVersion = cp.Status.RestartCount, cp.ResourceVersion
	r.Recorder.Eventf(vm, corev1.EventTypeWarning, v1alpha2.ReasonGuestPanicked, "The guest panicked on node %s: %s; restarting it (runPolicy %s)", p.Spec.NodeName, fault.Message, vm.Spec.RunPolicy)
	// The guest is dead and paused: nothing is lost by ending it at once.
	if err := r.Client.Delete(ctx, p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("ending the panicked guest's pod %s: %w", p.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Restarting a panicked guest", "pod", p.Name)
	s.terminating = append(s.terminating, p)
	s.active = nil
	return nil
}

// deriveAgent sets AgentReady, guestOSInfo and the guest's interfaces from the active pod.
func deriveAgent(st *v1alpha2.VirtualMachineStatus, p *corev1.Pod, gen int64) {
	report, ok := guestAgent(p)
	cond := metav1.Condition{Type: v1alpha2.VMConditionAgentReady, Status: metav1.ConditionFalse, Reason: v1alpha2.ReasonAgentNotReady, ObservedGeneration: gen}
	switch {
	case ok:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, v1alpha2.ReasonAgentReady, "the QEMU guest agent answers"
		meta.SetStatusCondition(&st.Conditions, cond)
		st.GuestOSInfo, st.Interfaces = report.OS, report.Interfaces
		return
	case p == nil:
		cond.Message = "the VM is not running"
	default:
		cond.Message = "the QEMU guest agent does not answer: install qemu-guest-agent in the guest, or wait for it to start"
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	st.GuestOSInfo, st.Interfaces = nil, nil
}
