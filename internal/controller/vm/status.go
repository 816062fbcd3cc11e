package vm

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// deriveStatus sets the VM's phase, node and conditions from what the reconcile observed.
func (r *Reconciler) deriveStatus(s *scope) {
	vm := s.vm
	st := &vm.Status
	gen := vm.Generation

	set := func(t string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}

	if s.ipReason != "" {
		set(v1alpha2.VMConditionIPAddressReady, s.ipReady && !s.ipNotAssigned, s.ipReason, s.ipMessage)
	}
	if s.macReason != "" {
		set(v1alpha2.VMConditionMACAddressReady, s.macReady, s.macReason, s.macMessage)
	}
	if s.diskReason != "" {
		set(v1alpha2.VMConditionBlockDevicesReady, s.disksReady, s.diskReason, s.diskMessage)
	}
	r.deriveProvisioning(s)
	deriveClass(s)
	derivePassthrough(s)
	if s.blockDevicesKnown {
		st.BlockDeviceRefs = s.blockDevices
	}

	st.VirtualMachinePods = st.VirtualMachinePods[:0]
	for _, p := range append(append(append([]*corev1.Pod{s.active}, s.extraActive...), s.targets...), s.terminating...) {
		// A source pod the VM migrated away from left the list when its target took over;
		// its removal does not bring it back for a moment (two writes per migration).
		if p != nil && !p.DeletionTimestamp.IsZero() && launcherpod.MigratedAway(p) {
			continue
		}
		if p != nil && p.Name != "" {
			st.VirtualMachinePods = append(st.VirtualMachinePods, v1alpha2.VirtualMachinePod{Name: p.Name, Active: p == s.active})
		}
	}

	p := s.active
	if launcherpod.NodeReachableOutdated(st.Conditions, p) {
		// It was about the node of a pod that is gone: it goes in this write rather than
		// in one of the fencing controller's, one write less per VM of a fenced node.
		meta.RemoveStatusCondition(&st.Conditions, v1alpha2.VMConditionNodeReachable)
	}
	if p != nil && p.Status.Phase == corev1.PodRunning {
		deriveAgent(st, p, gen)
	} else {
		deriveAgent(st, nil, gen)
	}
	// A migration shows as Migrating, on its source node, from its start until the migration
	// controller records its end (the guest's heartbeat came from the target), whichever pod
	// holds the VM in between.
	if ms := st.MigrationState; ms != nil && ms.StartTimestamp != nil && ms.EndTimestamp == nil && (p != nil || len(s.targets) > 0) {
		st.Phase = v1alpha2.MachineMigrating
		st.NodeName = ms.Source.Node
		set(v1alpha2.VMConditionRunning, true, v1alpha2.ReasonGuestRunning, "the guest is being migrated from node "+ms.Source.Node)
		st.ObservedGeneration = gen
		return
	}
	switch {
	case p == nil:
		st.NodeName = ""
		meta.RemoveStatusCondition(&st.Conditions, v1alpha2.VMConditionPodScheduled)
		switch {
		case len(s.terminating) > 0:
			st.Phase = v1alpha2.MachineStopping
			reason, msg := v1alpha2.ReasonPodNotRunning, "the VM's launcher pod is shutting down"
			// A pod that had ended (its node fenced, the guest off, a crash) and is being
			// removed keeps saying why the VM stopped: said over, the reason was lost for
			// good once the pod was gone (a Manual VM of a fenced node showed Stopped, not
			// NodeFenced).
			if why, whyMsg, ok := stoppedWhy(s); ok && allEnded(s.terminating) {
				reason, msg = why, whyMsg
			}
			set(v1alpha2.VMConditionRunning, false, reason, msg)
		case s.wantRun:
			st.Phase = v1alpha2.MachinePending
			reason, msg := v1alpha2.ReasonPodNotRunning, "waiting to start"
			switch {
			case s.lastEnd != "":
				reason, msg = s.lastEnd, s.lastEndCause
			case !s.ipReady:
				reason, msg = s.ipReason, s.ipMessage
			case r.Network && !s.macReady:
				reason, msg = s.macReason, s.macMessage
			case !s.disksReady:
				reason, msg = s.diskReason, s.diskMessage
			case !s.provReady && s.provMessage != "":
				reason, msg = v1alpha2.ReasonProvisioningNotReady, s.provMessage
			case !s.class.start && s.class.message != "":
				reason, msg = v1alpha2.ReasonClassNotReady, s.class.message
			case s.passthrough.blocked:
				reason, msg = s.passthrough.reason, s.passthrough.message
			}
			set(v1alpha2.VMConditionRunning, false, reason, msg)
		default:
			st.Phase = v1alpha2.MachineStopped
			reason, msg := v1alpha2.ReasonVMStopped, stoppedMessage(vm)
			if why, whyMsg, ok := stoppedWhy(s); ok {
				reason, msg = why, whyMsg
			}
			set(v1alpha2.VMConditionRunning, false, reason, msg)
		}
	default:
		if why, unschedulable := launcherpod.Unschedulable(p); unschedulable {
			st.Phase = v1alpha2.MachinePending
			st.NodeName = ""
			set(v1alpha2.VMConditionPodScheduled, false, v1alpha2.ReasonUnschedulable, why)
			set(v1alpha2.VMConditionRunning, false, v1alpha2.ReasonUnschedulable, "no node can run the VM: "+why)
			break
		}
		st.NodeName = p.Spec.NodeName
		if p.Spec.NodeName != "" {
			set(v1alpha2.VMConditionPodScheduled, true, v1alpha2.ReasonScheduled, "the VM is placed on node "+p.Spec.NodeName)
		}
		switch fault := guestFault(p); {
		case launcherpod.GuestRunning(p):
			st.Phase = v1alpha2.MachineRunning
			set(v1alpha2.VMConditionRunning, true, v1alpha2.ReasonGuestRunning, "QEMU runs the guest's vCPUs")
		case fault != nil:
			// Degraded only on evidence: a guest that runs and prints nothing is Running.
			st.Phase = v1alpha2.MachineDegraded
			set(v1alpha2.VMConditionRunning, false, fault.Reason, fault.Message+s.faultNote)
		default:
			st.Phase = v1alpha2.MachineStarting
			set(v1alpha2.VMConditionRunning, false, v1alpha2.ReasonPodNotRunning, startingMessage(p))
		}
	}
	st.ObservedGeneration = gen
}

// startingMessage says what a VM whose pod is not Ready waits for.
func startingMessage(p *corev1.Pod) string {
	if p.Status.Phase != corev1.PodRunning {
		return "waiting for the launcher pod to run on node " + p.Spec.NodeName
	}
	if c := launcherpod.Condition(p, v1alpha2.PodConditionGuestReady); c != nil && c.Message != "" {
		return c.Message
	}
	return v1alpha2.MessageQEMUStarting
}

func stoppedMessage(vm *v1alpha2.VirtualMachine) string {
	switch vm.Spec.RunPolicy {
	case v1alpha2.AlwaysOff:
		return "runPolicy AlwaysOff keeps the VM off"
	case v1alpha2.Manual:
		return "runPolicy Manual: start the VM with a Start VirtualMachineOperation (ferry v start)"
	}
	return "the VM was stopped; start it with a Start VirtualMachineOperation (ferry v start)"
}

// stoppedWhy is why the VM last stopped: how the pod this reconcile found ended, else
// what the status kept from an ended pod that is gone since (the pod told why; the status
// must keep saying it). ok is false when neither says.
func stoppedWhy(s *scope) (reason, msg string, ok bool) {
	if s.lastEnd != "" {
		return s.lastEnd, s.lastEndCause, true
	}
	if c := meta.FindStatusCondition(s.vm.Status.Conditions, v1alpha2.VMConditionRunning); c != nil && c.Status == metav1.ConditionFalse && endReason(c.Reason) {
		return c.Reason, c.Message, true
	}
	return "", "", false
}

// endReason tells whether a Running condition's reason says how the VM's last pod ended.
func endReason(reason string) bool {
	return reason == v1alpha2.ReasonGuestShutdown || reason == v1alpha2.ReasonCrashed || reason == v1alpha2.ReasonNodeFenced
}

// allEnded tells whether every pod had ended (Succeeded or Failed) before its removal.
func allEnded(pods []*corev1.Pod) bool {
	for _, p := range pods {
		if _, ended := podEnded(p); !ended {
			return false
		}
	}
	return true
}
