package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// OperationType is what a VirtualMachineOperation does.
// +kubebuilder:validation:Enum=Start;Stop;Restart;Evict;Migrate;Restore;Clone
type OperationType string

const (
	OpStart   OperationType = "Start"
	OpStop    OperationType = "Stop"
	OpRestart OperationType = "Restart"
	OpEvict   OperationType = "Evict"
	OpMigrate OperationType = "Migrate"
	// OpRestore puts a Stopped VM back to a VirtualMachineSnapshot of it (spec.restore).
	OpRestore OperationType = "Restore"
	// OpClone makes a new VM, with new disks, from the VM (spec.clone).
	OpClone OperationType = "Clone"
)

// SnapshotOperationMode is how a restore or a clone treats what it would change.
// +kubebuilder:validation:Enum=DryRun;Strict;BestEffort
type SnapshotOperationMode string

const (
	// ModeDryRun changes nothing: status.resources says what would be changed or made, and
	// what stands in the way.
	ModeDryRun SnapshotOperationMode = "DryRun"
	// ModeStrict restores or clones exactly what the snapshot holds; a conflict fails it
	// before anything changes.
	ModeStrict SnapshotOperationMode = "Strict"
	// ModeBestEffort leaves out of the VM images that are gone (VirtualImage,
	// ClusterVirtualImage).
	ModeBestEffort SnapshotOperationMode = "BestEffort"
)

// RestoreSpec says which VM snapshot a Restore puts the VM back to.
type RestoreSpec struct {
	Mode SnapshotOperationMode `json:"mode"`
	// VirtualMachineSnapshotName is a VirtualMachineSnapshot of the operation's VM, in its
	// namespace, that is Ready.
	// +kubebuilder:validation:MinLength=1
	VirtualMachineSnapshotName string `json:"virtualMachineSnapshotName"`
}

// NameReplacementFrom names an object (by kind, if given, and name) to rename.
type NameReplacementFrom struct {
	// Kind (VirtualMachine, VirtualDisk, VirtualMachineIPAddress); empty: any kind.
	// +kubebuilder:validation:MinLength=1
	// +optional
	Kind string `json:"kind,omitempty"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// NameReplacement renames one object of the source in its copy.
type NameReplacement struct {
	From NameReplacementFrom `json:"from"`
	// +kubebuilder:validation:MinLength=1
	To string `json:"to"`
}

// NameCustomization adds a prefix and a suffix to the names of every object copied.
// +kubebuilder:validation:XValidation:rule="!has(self.namePrefix) || (size(self.namePrefix) >= 1 && size(self.namePrefix) <= 59)",message="namePrefix length must be between 1 and 59 characters if set"
// +kubebuilder:validation:XValidation:rule="!has(self.nameSuffix) || (size(self.nameSuffix) >= 1 && size(self.nameSuffix) <= 59)",message="nameSuffix length must be between 1 and 59 characters if set"
type NameCustomization struct {
	// +optional
	NamePrefix string `json:"namePrefix,omitempty"`
	// +optional
	NameSuffix string `json:"nameSuffix,omitempty"`
}

// CloneSpec says how a Clone names the new VM and its disks.
// +kubebuilder:validation:XValidation:rule="(has(self.customization) && ((has(self.customization.namePrefix) && size(self.customization.namePrefix) > 0) || (has(self.customization.nameSuffix) && size(self.customization.nameSuffix) > 0))) || (has(self.nameReplacement) && size(self.nameReplacement) > 0)",message="a clone needs new names: set customization.namePrefix, customization.nameSuffix or nameReplacement"
type CloneSpec struct {
	Mode SnapshotOperationMode `json:"mode"`
	// NameReplacement renames particular objects; it is applied before customization.
	// +kubebuilder:validation:XValidation:rule="self.all(nr, has(nr.to) && size(nr.to) >= 1 && size(nr.to) <= 59)",message="Each nameReplacement.to must be between 1 and 59 characters"
	// +optional
	NameReplacement []NameReplacement `json:"nameReplacement,omitempty"`
	// +optional
	Customization *NameCustomization `json:"customization,omitempty"`
}

// SnapshotResourceState is how far a restore or clone got with one object.
// +kubebuilder:validation:Enum=InProgress;Completed;Failed
type SnapshotResourceState string

const (
	ResourceInProgress SnapshotResourceState = "InProgress"
	ResourceCompleted  SnapshotResourceState = "Completed"
	ResourceFailed     SnapshotResourceState = "Failed"
)

// SnapshotResourceStatus is one object a restore or clone changes or makes, and what it
// does with it (or, in DryRun, would do, or what stands in the way).
type SnapshotResourceStatus struct {
	APIVersion string                `json:"apiVersion"`
	Kind       string                `json:"kind"`
	Name       string                `json:"name"`
	Status     SnapshotResourceState `json:"status"`
	Message    string                `json:"message"`
}

// OperationPhase is the phase of an operation, as Deckhouse's:
//   - Pending: the operation is queued (a migration waits for a slot on its node);
//   - InProgress: the operation is being carried out;
//   - Completed: it ended well;
//   - Failed: it did not; the Completed condition's reason and message say why;
//   - Terminating: the operation is being deleted (a migration being cancelled);
//   - Superseded: a later operation on the same VM took over (Deckhouse's; Ferry
//     supersedes no operation, so it sets none).
//
// +kubebuilder:validation:Enum=Pending;InProgress;Completed;Failed;Terminating;Superseded
type OperationPhase string

const (
	OpPending     OperationPhase = "Pending"
	OpInProgress  OperationPhase = "InProgress"
	OpCompleted   OperationPhase = "Completed"
	OpFailed      OperationPhase = "Failed"
	OpTerminating OperationPhase = "Terminating"
	OpSuperseded  OperationPhase = "Superseded"
)

// MigrateSpec narrows where a Migrate operation may take the VM.
type MigrateSpec struct {
	// NodeSelector picks target nodes by label, on top of the VM's own placement (its
	// nodeSelector, affinity and tolerations, which it must not contradict).
	// `kubernetes.io/hostname: NODE` names one node, as `ferry v migrate --target-node-name
	// NODE` (and d8's) writes it. A selector that no Ready, uncordoned node fitting the VM
	// matches fails the operation at once with reason TargetUnschedulable.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
}

// VirtualMachineOperationSpec is the requested operation. It cannot change once created.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create a new VirtualMachineOperation instead"
// +kubebuilder:validation:XValidation:rule="!has(self.migrate) || self.type == 'Migrate'",message="spec.migrate is only allowed with type Migrate"
// +kubebuilder:validation:XValidation:rule="self.type == 'Start' ? !has(self.force) || !self.force : true",message="The `Start` operation cannot be performed forcibly."
// +kubebuilder:validation:XValidation:rule="self.type == 'Restore' ? has(self.restore) : true",message="Restore requires restore field."
// +kubebuilder:validation:XValidation:rule="self.type == 'Clone' ? has(self.clone) : true",message="Clone requires clone field."
// +kubebuilder:validation:XValidation:rule="!has(self.restore) || self.type == 'Restore'",message="spec.restore is only allowed with type Restore"
// +kubebuilder:validation:XValidation:rule="!has(self.clone) || self.type == 'Clone'",message="spec.clone is only allowed with type Clone"
type VirtualMachineOperationSpec struct {
	Type OperationType `json:"type"`
	// VirtualMachineName is the VM in the operation's namespace.
	// +kubebuilder:validation:MinLength=1
	VirtualMachineName string `json:"virtualMachineName"`
	// Force stops or restarts without waiting for the guest, or forces a migration to converge
	// (within what the VM's liveMigrationPolicy allows).
	// +optional
	Force *bool `json:"force,omitempty"`
	// +optional
	Migrate *MigrateSpec `json:"migrate,omitempty"`
	// +optional
	Restore *RestoreSpec `json:"restore,omitempty"`
	// +optional
	Clone *CloneSpec `json:"clone,omitempty"`
}

// MigrationPhase is the step a live migration is at; the controller resumes from it.
type MigrationPhase string

const (
	MigrationPending      MigrationPhase = "Pending"
	MigrationScheduling   MigrationPhase = "TargetScheduling"
	MigrationPreparing    MigrationPhase = "TargetPreparing"
	MigrationTransferring MigrationPhase = "Transferring"
	MigrationDone         MigrationPhase = "Done"
	MigrationAborting     MigrationPhase = "Aborting"
)

// OperationMigrationStatus is what a migration operation recorded about its migration.
type OperationMigrationStatus struct {
	Phase      MigrationPhase `json:"phase,omitempty"`
	SourceNode string         `json:"sourceNode,omitempty"`
	SourcePod  string         `json:"sourcePod,omitempty"`
	TargetNode string         `json:"targetNode,omitempty"`
	TargetPod  string         `json:"targetPod,omitempty"`
	// AutoConverge says whether the guest's CPU may be throttled to make it converge.
	AutoConverge bool         `json:"autoConverge,omitempty"`
	StartTime    *metav1.Time `json:"startTime,omitempty"`
	// TransferStartTime is when memory started to move.
	TransferStartTime *metav1.Time `json:"transferStartTime,omitempty"`
	EndTime           *metav1.Time `json:"endTime,omitempty"`
	// DowntimeMs is how long the guest was paused at switchover, as QEMU measured it.
	DowntimeMs int64 `json:"downtimeMs,omitempty"`
	// TransferMs is QEMU's total migration time.
	TransferMs int64 `json:"transferMs,omitempty"`
	// MinRemainingBytes is the least memory left to send seen once QEMU copies pages the
	// guest dirtied meanwhile, and MinRemainingTime when: a migration whose least does not
	// improve for 10 s at maximum throttle shows reason NotConverging, as Deckhouse's.
	MinRemainingBytes int64        `json:"minRemainingBytes,omitempty"`
	MinRemainingTime  *metav1.Time `json:"minRemainingTime,omitempty"`
}

// VirtualMachineOperationStatus is the progress of an operation.
type VirtualMachineOperationStatus struct {
	// Migration is set for Evict and Migrate operations.
	// +optional
	Migration *OperationMigrationStatus `json:"migration,omitempty"`
	Phase     OperationPhase            `json:"phase"`
	// Conditions: Completed (True once the operation ended well; while it runs and when it
	// failed, False with a reason saying where it is or why it failed, and a message for
	// people) and, for Start, Stop and Restart, SignalSent.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Progress is how far an Evict or Migrate got, in percent as Deckhouse reports it
	// ("0%" pending, "2%" scheduling the target, "3%" preparing it, 10-90% while memory is
	// copied, "91%" once the source paused, "92%" once the target runs the guest, "100%"
	// completed; a failed migration keeps the last value). Empty for Start, Stop and Restart.
	// +optional
	Progress string `json:"progress,omitempty"`
	// Resources (Restore, Clone) are the objects the operation changes or makes, or in
	// DryRun would, each with what happens to it.
	// +optional
	Resources []SnapshotResourceStatus `json:"resources,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachineOperation asks for one action on one VM: start, stop, restart, evict,
// migrate, restore (to a VirtualMachineSnapshot) or clone.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmop;vmops,categories=all;virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`,description="VirtualMachineOperation phase."
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`,description="VirtualMachineOperation progress in percent format."
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`,description="VirtualMachineOperation type."
// +kubebuilder:printcolumn:name="VirtualMachine",type=string,JSONPath=`.spec.virtualMachineName`,description="VirtualMachine name."
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`,description="Time of resource creation."
type VirtualMachineOperation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineOperationSpec   `json:"spec"`
	Status VirtualMachineOperationStatus `json:"status,omitempty"`
}

// VirtualMachineOperationList is a list of VirtualMachineOperation.
// +kubebuilder:object:root=true
type VirtualMachineOperationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineOperation `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachineOperation{}, &VirtualMachineOperationList{})
}

// Finished tells whether the operation has ended, well or not.
func (op *VirtualMachineOperation) Finished() bool {
	return op.Status.Phase == OpCompleted || op.Status.Phase == OpFailed || op.Status.Phase == OpSuperseded
}

// Outcome is the reason and message of the operation's Completed condition: where it is or
// how it ended, for people. Empty before the controller has seen the operation.
func (op *VirtualMachineOperation) Outcome() (reason, message string) {
	for _, c := range op.Status.Conditions {
		if c.Type == OpConditionCompleted {
			return c.Reason, c.Message
		}
	}
	return "", ""
}

// Condition types of a VirtualMachineOperation, as Deckhouse's.
const (
	// OpConditionCompleted is True when the operation ended well, False with a reason otherwise.
	OpConditionCompleted = "Completed"
	// OpConditionSignalSent (Start, Stop, Restart) is True once the VM was told (its power
	// state set, its pod ended), False with ReasonSignalSentError if that failed.
	OpConditionSignalSent = "SignalSent"
)

// Reasons of a VirtualMachineOperation's Completed condition, spelled as Deckhouse's
// (api/core/v1alpha2/vmopcondition). The message tells the details, including those
// Deckhouse has no reason for (which side of a migration failed, a timeout).
const (
	ReasonVMNotFound         = "VirtualMachineNotFound"
	ReasonNotApplicable      = "NotApplicableForVirtualMachineRunPolicy"
	ReasonNotApplicableState = "NotApplicableForVirtualMachinePhase"
	// ReasonNotReadyToBeExecuted: another operation of the VM is still running.
	ReasonNotReadyToBeExecuted = "NotReadyToBeExecuted"
	ReasonStartInProgress      = "StartInProgress"
	ReasonStopInProgress       = "StopInProgress"
	ReasonRestartInProgress    = "RestartInProgress"
	ReasonOperationCompleted   = "OperationCompleted"
	// ReasonOperationFailed: a Start, Stop or Restart failed (it did not finish within
	// power.Timeout, say); the message says how.
	ReasonOperationFailed = "OperationFailed"

	// Migration reasons (Evict, Migrate), in the order a migration goes through them.
	ReasonMigrationPending   = "MigrationPending"
	ReasonWaitingForSyncSlot = "WaitingForSyncSlot"
	ReasonTargetScheduling   = "TargetScheduling"
	ReasonTargetPreparing    = "TargetPreparing"
	ReasonSyncing            = "Syncing"
	// ReasonSourceSuspended: the memory is across and the source paused the guest; the
	// target is taking over.
	ReasonSourceSuspended = "SourceSuspended"
	// ReasonTargetResumed: the guest runs on the target; the VM's status is following.
	ReasonTargetResumed = "TargetResumed"
	// ReasonMigrationCompleted ends a successful migration.
	ReasonMigrationCompleted = "Completed"

	// Why a migration failed or was refused.
	ReasonTargetUnschedulable = "TargetUnschedulable"
	ReasonNotConverging       = "NotConverging"
	ReasonAborted             = "Aborted"
	ReasonOtherMigration      = "OtherMigrationInProgress"
	ReasonForceNotAllowed     = "NotApplicableForLiveMigrationPolicy"
	// ReasonMigrationFailed: the migration failed for a reason none of the others names
	// (Deckhouse's "Failed"). ReasonTargetFailed and ReasonSourceFailed are the same
	// reason, named for the side whose pod or QEMU ended; the message says which.
	ReasonMigrationFailed = "Failed"
	ReasonTargetFailed    = ReasonMigrationFailed
	ReasonSourceFailed    = ReasonMigrationFailed
)

// Reasons of a VirtualMachineOperation's SignalSent condition.
const (
	ReasonSignalSentSuccess = "SignalSentSuccess"
	ReasonSignalSentError   = "SignalSentError"
)

// Reasons of a Restore's or Clone's Completed condition while it runs (Deckhouse's
// vmopcondition). A restore or clone that ended uses ReasonOperationCompleted, or
// ReasonOperationFailed with a message that says what stood in the way (a missing
// snapshot, a conflict: the resource marked Failed in status.resources).
const (
	ReasonRestoreInProgress = "RestoreInProgress"
	ReasonCloneInProgress   = "CloneInProgress"
)
