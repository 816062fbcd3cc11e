package vm

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// deriveRunningStatus sets what deriveStatus leaves: the changes awaiting a restart and
// their conditions (AwaitingRestartToApplyConfiguration, ConfigurationApplied), the
// Migrating condition, status.stats and status.resources. It runs after deriveStatus,
// whose phase it reads.
func (r *Reconciler) deriveRunningStatus(s *scope) {
	vm := s.vm
	st := &vm.Status
	gen := vm.Generation
	running := st.Phase == v1alpha2.MachineRunning || st.Phase == v1alpha2.MachineMigrating || st.Phase == v1alpha2.MachineDegraded

	// Deckhouse shows both conditions only while they say something: absent when the VM
	// runs its spec, and while it does not run (a start takes the spec as it is).
	var pending []fieldChange
	if running {
		pending = s.run.pending
	}
	st.RestartAwaitingChanges = rawChanges(pending)
	if len(pending) > 0 {
		msg := "Waiting for the user to restart in order to apply the configuration changes: " + changePaths(pending)
		if vm.Spec.RestartApproval() == v1alpha2.RestartAutomatic {
			msg = "Restarting the VM to apply the configuration changes (restartApprovalMode Automatic): " + changePaths(pending)
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha2.VMConditionAwaitingRestart, Status: metav1.ConditionTrue,
			Reason: v1alpha2.ReasonChangesPendingRestart, Message: msg, ObservedGeneration: gen})
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha2.VMConditionAwaitingRestart)
	}
	var notApplied []string
	reason := v1alpha2.ReasonConfigurationNotApplied
	if len(pending) > 0 {
		notApplied = append(notApplied, "changes await a restart: "+changePaths(pending))
	}
	if running && s.run.placementReason != "" {
		notApplied = append(notApplied, s.run.placementMessage)
		reason = s.run.placementReason
	}
	if len(notApplied) > 0 {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha2.VMConditionConfigurationApplied, Status: metav1.ConditionFalse,
			Reason: reason, Message: strings.Join(notApplied, "; "), ObservedGeneration: gen})
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha2.VMConditionConfigurationApplied)
	}

	deriveMigrating(st, s.run.migration, gen)
	r.deriveStats(s)
	st.Resources = resourcesOf(s.active)
}

// deriveMigrating: True (InProgress) while a migration transfers the VM, False (Pending)
// while an Evict or Migrate operation waits to start one, absent otherwise. An operation
// whose migration the VM's status shows ended (it only waits for the VM's status to name
// the new node before it completes) waits for nothing: it would show as Pending for one
// write, between the VM's Running on its new node and the operation's end.
func deriveMigrating(st *v1alpha2.VirtualMachineStatus, op *v1alpha2.VirtualMachineOperation, gen int64) {
	ms := st.MigrationState
	open := ms != nil && ms.StartTimestamp != nil && ms.EndTimestamp == nil
	if op != nil && ms != nil && ms.EndTimestamp != nil && op.Status.Migration != nil && op.Status.Migration.TargetPod != "" && ms.Target.Pod == op.Status.Migration.TargetPod {
		op = nil
	}
	switch {
	case open:
		msg := "the VM is being migrated from node " + ms.Source.Node
		if op != nil {
			msg += " (operation " + op.Name + ")"
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha2.VMConditionMigrating, Status: metav1.ConditionTrue,
			Reason: v1alpha2.ReasonMigratingInProgress, Message: msg, ObservedGeneration: gen})
	case op != nil:
		msg := fmt.Sprintf("operation %s: %s", op.Name, op.Status.Progress)
		if op.Status.Progress == "" {
			msg = "waiting for operation " + op.Name + " to start"
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha2.VMConditionMigrating, Status: metav1.ConditionFalse,
			Reason: v1alpha2.ReasonMigratingPending, Message: msg, ObservedGeneration: gen})
	default:
		meta.RemoveStatusCondition(&st.Conditions, v1alpha2.VMConditionMigrating)
	}
}

// deriveStats records phase changes and the last start's durations. The moments are what
// the cluster recorded where it has them (the pod's creation, its guest-ready condition,
// the agent condition's transition), not when this reconcile happened to look.
func (r *Reconciler) deriveStats(s *scope) {
	st := &s.vm.Status
	if st.Stats == nil {
		st.Stats = &v1alpha2.VirtualMachineStats{}
	}
	stats := st.Stats
	now := metav1.NewTime(r.Now().Truncate(time.Second))
	var last v1alpha2.MachinePhase
	if n := len(stats.PhasesTransitions); n > 0 {
		last = stats.PhasesTransitions[n-1].Phase
	}
	if st.Phase != "" && st.Phase != last {
		at := now
		if st.Phase == v1alpha2.MachineRunning && last != v1alpha2.MachineMigrating {
			at = guestRunningSince(s.active, now)
			r.recordStart(s, at)
		}
		stats.PhasesTransitions = append(stats.PhasesTransitions, v1alpha2.VirtualMachinePhaseTransition{Phase: st.Phase, Timestamp: at})
		if n := len(stats.PhasesTransitions); n > v1alpha2.MaxPhaseTransitions {
			stats.PhasesTransitions = stats.PhasesTransitions[n-v1alpha2.MaxPhaseTransitions:]
		}
	}
	if st.Phase == v1alpha2.MachineStopped || st.Phase == v1alpha2.MachinePending {
		stats.LastStartTime = nil
	}
	lt := &stats.LaunchTimeDuration
	if c := meta.FindStatusCondition(st.Conditions, v1alpha2.VMConditionAgentReady); c != nil && c.Status == metav1.ConditionTrue &&
		lt.GuestOSAgentStarting == nil && stats.LastStartTime != nil && !c.LastTransitionTime.Before(stats.LastStartTime) {
		lt.GuestOSAgentStarting = &metav1.Duration{Duration: c.LastTransitionTime.Sub(stats.LastStartTime.Time)}
	}
}

// recordStart notes a start that reached Running at at: how long it waited for its
// dependencies (from the last Pending to its pod's creation) and for its pod to run the
// guest (from the pod's creation).
func (r *Reconciler) recordStart(s *scope, at metav1.Time) {
	stats := s.vm.Status.Stats
	stats.LastStartTime = &at
	lt := v1alpha2.VirtualMachineLaunchTimeDuration{}
	if p := s.active; p != nil {
		created := p.CreationTimestamp
		lt.VirtualMachineStarting = &metav1.Duration{Duration: max(at.Sub(created.Time), 0)}
		for i := len(stats.PhasesTransitions) - 1; i >= 0; i-- {
			t := stats.PhasesTransitions[i]
			if t.Phase == v1alpha2.MachinePending {
				if !created.Before(&t.Timestamp) {
					lt.WaitingForDependencies = &metav1.Duration{Duration: created.Sub(t.Timestamp.Time)}
				}
				break
			}
			if t.Phase == v1alpha2.MachineRunning || t.Phase == v1alpha2.MachineStopped {
				break
			}
		}
	}
	stats.LaunchTimeDuration = lt
}

// guestRunningSince is when the pod's guest started running: its guest-ready condition's
// transition, else now.
func guestRunningSince(p *corev1.Pod, now metav1.Time) metav1.Time {
	if p != nil {
		if c := launcherpod.Condition(p, v1alpha2.PodConditionGuestReady); c != nil && c.Status == corev1.ConditionTrue && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime
		}
	}
	return now
}

// resourcesOf is what the VM's pod gives it (nil without a pod: nothing is given): its vCPUs (one socket: QEMU's -smp N makes N cores of one socket), their share and
// the pod's CPU request for them, its memory and what the pod requests beyond it for QEMU.
func resourcesOf(p *corev1.Pod) *v1alpha2.VirtualMachineResources {
	if p == nil {
		return nil
	}
	spec, ok := podAppliedSpec(p)
	if !ok {
		return nil // a pod of an older controller: what it runs is not recorded
	}
	cores := max(spec.CPU.Cores, 1)
	fraction, err := strconv.Atoi(strings.TrimSuffix(spec.CPU.CoreFraction, "%"))
	if err != nil || fraction <= 0 {
		fraction = 100
	}
	res := &v1alpha2.VirtualMachineResources{
		CPU: v1alpha2.VirtualMachineCPUResources{
			Cores: cores, CoreFraction: strconv.Itoa(fraction) + "%",
			RequestedCores:  *resource.NewMilliQuantity(int64(cores*fraction*10), resource.DecimalSI),
			RuntimeOverhead: *resource.NewQuantity(0, resource.DecimalSI),
			Topology:        &v1alpha2.VirtualMachineCPUTopology{Sockets: 1, CoresPerSocket: cores},
		},
		Memory: v1alpha2.VirtualMachineMemoryResources{Size: spec.Memory.Size.DeepCopy(), RuntimeOverhead: *resource.NewQuantity(0, resource.BinarySI)},
	}
	if len(p.Spec.Containers) > 0 {
		req := p.Spec.Containers[0].Resources.Requests
		if cpu, ok := req[corev1.ResourceCPU]; ok {
			res.CPU.RequestedCores = cpu.DeepCopy()
		}
		if mem, ok := req[corev1.ResourceMemory]; ok {
			mem = mem.DeepCopy()
			mem.Sub(spec.Memory.Size)
			res.Memory.RuntimeOverhead = mem
		}
	}
	return res
}
