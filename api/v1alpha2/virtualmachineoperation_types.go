package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// OperationType is what a VirtualMachineOperation does.
// +kubebuilder:validation:Enum=Start;Stop;Restart;Evict;Migrate
type OperationType string

const (
	OpStart   OperationType = "Start"
	OpStop    OperationType = "Stop"
	OpRestart OperationType = "Restart"
	OpEvict   OperationType = "Evict"
	OpMigrate OperationType = "Migrate"
)

// OperationPhase is the phase of an operation.
// +kubebuilder:validation:Enum=Pending;InProgress;Completed;Failed;Terminating
type OperationPhase string

const (
	OpPending     OperationPhase = "Pending"
	OpInProgress  OperationPhase = "InProgress"
	OpCompleted   OperationPhase = "Completed"
	OpFailed      OperationPhase = "Failed"
	OpTerminating OperationPhase = "Terminating"
)

// MigrateSpec narrows where a Migrate operation may take the VM.
type MigrateSpec struct {
	// NodeSelector picks target nodes by label, on top of the VM's own placement.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
}

// VirtualMachineOperationSpec is the requested operation. It cannot change once created.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create a new VirtualMachineOperation instead"
// +kubebuilder:validation:XValidation:rule="!has(self.migrate) || self.type == 'Migrate'",message="spec.migrate is only allowed with type Migrate"
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
}

// VirtualMachineOperationStatus is the progress of an operation.
type VirtualMachineOperationStatus struct {
	// Migration is set for Evict and Migrate operations.
	// +optional
	Migration *OperationMigrationStatus `json:"migration,omitempty"`
	// +optional
	Phase OperationPhase `json:"phase,omitempty"`
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Progress is a short human summary of how far the operation got.
	// +optional
	Progress string `json:"progress,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachineOperation asks for one action on one VM: start, stop, restart, evict or migrate.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmop;vmops,categories=all;virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="VirtualMachine",type=string,JSONPath=`.spec.virtualMachineName`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
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
	return op.Status.Phase == OpCompleted || op.Status.Phase == OpFailed
}
