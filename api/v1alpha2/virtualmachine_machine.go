package v1alpha2

import (
	corev1 "k8s.io/api/core/v1"
)

// Condition types of a VirtualMachine about changes to a running VM and its migrations,
// with Deckhouse's names.
const (
	// VMConditionAwaitingRestart is True while the running VM has changes of its spec that
	// it takes only at its next restart (status.restartAwaitingChanges lists them); absent
	// otherwise, and while the VM does not run.
	VMConditionAwaitingRestart = "AwaitingRestartToApplyConfiguration"
	// VMConditionConfigurationApplied is False while the running VM does not run its spec
	// as it is (a change awaits a restart, or a placement change awaits a migration);
	// absent otherwise.
	VMConditionConfigurationApplied = "ConfigurationApplied"
	// VMConditionMigrating is True while a live migration of the VM transfers it, False
	// while one is asked for and not transferring yet; absent otherwise.
	VMConditionMigrating = "Migrating"
)

// Reasons of those conditions, Deckhouse's where it has them.
const (
	ReasonChangesPendingRestart   = "ChangesPendingRestart"
	ReasonConfigurationNotApplied = "ConfigurationNotApplied"
	// ReasonPlacementNotMatched: the node the VM runs on no longer fits its nodeSelector,
	// affinity or tolerations; a migration moves it (ConfigurationApplied False).
	ReasonPlacementNotMatched = "NodePlacementNotMatched"
	// ReasonPlacementUnsatisfiable: as ReasonPlacementNotMatched, but no other node fits
	// either, so no migration can move it yet.
	ReasonPlacementUnsatisfiable = "NodePlacementUnsatisfiable"
	// Reasons of Migrating: a migration asked for (Pending) or transferring (InProgress).
	ReasonMigratingPending    = "Pending"
	ReasonMigratingInProgress = "InProgress"
)

// Annotations and labels of changes to a running VM.
const (
	// AnnotationAppliedSpec on a launcher pod is the JSON of the part of the VM's spec the
	// pod was built from (vm.AppliedSpec); the controller compares it with the VM's spec to
	// tell what awaits a restart. Only Ferry writes it (the launcher-pods policy).
	AnnotationAppliedSpec = "virtualization.ferryvm.io/applied-spec"
	// LabelNodePlacement on a VirtualMachineOperation created by Ferry to move a VM whose
	// node no longer fits its placement; its value is that node. Deckhouse names such
	// operations nodeplacement-update-*.
	LabelNodePlacement = "virtualization.ferryvm.io/node-placement"
	// AnnotationWorkloadUpdate is Deckhouse's mark of an operation its controllers created
	// to update a running VM.
	AnnotationWorkloadUpdate = "virtualization.deckhouse.io/workload-update"
)

// ParavirtualizationEnabled tells whether the VM gets virtio devices (the default).
func (s *VirtualMachineSpec) ParavirtualizationEnabled() bool {
	return s.EnableParavirtualization == nil || *s.EnableParavirtualization
}

// RestartApproval is the VM's restart approval mode, Manual by default.
func (s *VirtualMachineSpec) RestartApproval() RestartApprovalMode {
	if s.Disruptions == nil || s.Disruptions.RestartApprovalMode == "" {
		return RestartManual
	}
	return s.Disruptions.RestartApprovalMode
}

// ForPod is the launcher pod's affinity for a VM's: node affinity as it is, and
// Deckhouse's virtualMachineAndPod(Anti)Affinity as the pod's (anti-)affinity, which
// selects launcher pods (they carry their VM's labels) and other pods alike. Ferry's
// earlier podAffinity and podAntiAffinity add their terms. nil for nil.
func (a *VirtualMachineAffinity) ForPod() *corev1.Affinity {
	if a == nil {
		return nil
	}
	out := &corev1.Affinity{NodeAffinity: a.NodeAffinity.DeepCopy()}
	if a.PodAffinity != nil || a.VirtualMachineAndPodAffinity != nil {
		pa := a.PodAffinity.DeepCopy()
		if pa == nil {
			pa = &corev1.PodAffinity{}
		}
		req, pref := a.VirtualMachineAndPodAffinity.terms()
		pa.RequiredDuringSchedulingIgnoredDuringExecution = append(pa.RequiredDuringSchedulingIgnoredDuringExecution, req...)
		pa.PreferredDuringSchedulingIgnoredDuringExecution = append(pa.PreferredDuringSchedulingIgnoredDuringExecution, pref...)
		out.PodAffinity = pa
	}
	if a.PodAntiAffinity != nil || a.VirtualMachineAndPodAntiAffinity != nil {
		pa := a.PodAntiAffinity.DeepCopy()
		if pa == nil {
			pa = &corev1.PodAntiAffinity{}
		}
		req, pref := a.VirtualMachineAndPodAntiAffinity.terms()
		pa.RequiredDuringSchedulingIgnoredDuringExecution = append(pa.RequiredDuringSchedulingIgnoredDuringExecution, req...)
		pa.PreferredDuringSchedulingIgnoredDuringExecution = append(pa.PreferredDuringSchedulingIgnoredDuringExecution, pref...)
		out.PodAntiAffinity = pa
	}
	if out.NodeAffinity == nil && out.PodAffinity == nil && out.PodAntiAffinity == nil {
		return nil
	}
	return out
}

// terms are a's terms as a pod's (anti-)affinity has them.
func (a *VirtualMachineAndPodAffinity) terms() ([]corev1.PodAffinityTerm, []corev1.WeightedPodAffinityTerm) {
	if a == nil {
		return nil, nil
	}
	var req []corev1.PodAffinityTerm
	for _, t := range a.RequiredDuringSchedulingIgnoredDuringExecution {
		req = append(req, *t.DeepCopy())
	}
	var pref []corev1.WeightedPodAffinityTerm
	for _, t := range a.PreferredDuringSchedulingIgnoredDuringExecution {
		pref = append(pref, corev1.WeightedPodAffinityTerm{Weight: t.Weight, PodAffinityTerm: *t.VirtualMachineAndPodAffinityTerm.DeepCopy()})
	}
	return req, pref
}

// PodTopologySpreadConstraints are the launcher pod's constraints for a VM's.
func PodTopologySpreadConstraints(in []TopologySpreadConstraint) []corev1.TopologySpreadConstraint {
	var out []corev1.TopologySpreadConstraint
	for _, c := range in {
		out = append(out, corev1.TopologySpreadConstraint{
			MaxSkew: c.MaxSkew, TopologyKey: c.TopologyKey, WhenUnsatisfiable: c.WhenUnsatisfiable,
			LabelSelector: c.LabelSelector.DeepCopy(),
		})
	}
	return out
}
