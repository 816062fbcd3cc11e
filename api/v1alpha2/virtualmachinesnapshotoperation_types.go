package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SnapshotOperationType is what a VirtualMachineSnapshotOperation does.
// +kubebuilder:validation:Enum=CreateVirtualMachine
type SnapshotOperationType string

// SnapshotOpCreateVM makes a new VM, with new disks, from a VirtualMachineSnapshot.
const SnapshotOpCreateVM SnapshotOperationType = "CreateVirtualMachine"

// VirtualMachineSnapshotOperationSpec is the operation asked for. It cannot change.
// Deckhouse's rule names the type 'CreateVirtualMachineName', which no operation has, so
// it never holds there; Ferry's checks the type the enum allows.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message=".spec is immutable"
// +kubebuilder:validation:XValidation:rule="self.type == 'CreateVirtualMachine' ? has(self.createVirtualMachine) : true",message="CreateVirtualMachine requires createVirtualMachine field."
type VirtualMachineSnapshotOperationSpec struct {
	Type SnapshotOperationType `json:"type"`
	// VirtualMachineSnapshotName is a Ready VirtualMachineSnapshot of the operation's
	// namespace.
	// +kubebuilder:validation:MinLength=1
	VirtualMachineSnapshotName string `json:"virtualMachineSnapshotName"`
	// CreateVirtualMachine names the new VM and disks, as a Clone operation's spec.clone.
	// +optional
	CreateVirtualMachine *CloneSpec `json:"createVirtualMachine,omitempty"`
}

// SnapshotOperationPhase is the phase of a VirtualMachineSnapshotOperation, for people.
// +kubebuilder:validation:Enum=Pending;InProgress;Completed;Failed;Terminating
type SnapshotOperationPhase string

// VirtualMachineSnapshotOperationStatus is the progress of the operation.
type VirtualMachineSnapshotOperationStatus struct {
	Phase SnapshotOperationPhase `json:"phase"`
	// Conditions: Completed, as a VirtualMachineOperation's.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Resources are the objects the operation makes, or in DryRun would, each with what
	// happens to it.
	// +optional
	Resources []SnapshotResourceStatus `json:"resources,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachineSnapshotOperation makes a new VM from a VirtualMachineSnapshot.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmsop,categories=virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`,description="VirtualMachineSnapshotOperation phase."
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`,description="VirtualMachineSnapshotOperation type."
// +kubebuilder:printcolumn:name="VirtualMachineSnapshot",type=string,JSONPath=`.spec.virtualMachineSnapshotName`,description="VirtualMachineSnapshot name."
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`,description="Time of resource creation."
type VirtualMachineSnapshotOperation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineSnapshotOperationSpec   `json:"spec"`
	Status VirtualMachineSnapshotOperationStatus `json:"status,omitempty"`
}

// VirtualMachineSnapshotOperationList is a list of VirtualMachineSnapshotOperation.
// +kubebuilder:object:root=true
type VirtualMachineSnapshotOperationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineSnapshotOperation `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachineSnapshotOperation{}, &VirtualMachineSnapshotOperationList{})
}
