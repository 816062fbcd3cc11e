package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VMBDAObjectRefKind is the kind of block device an attachment hot-plugs.
// +kubebuilder:validation:Enum=VirtualDisk;VirtualImage;ClusterVirtualImage
type VMBDAObjectRefKind string

const (
	// VMBDAKindVirtualDisk attaches a VirtualDisk, writable; it serves one VM at a time.
	VMBDAKindVirtualDisk VMBDAObjectRefKind = "VirtualDisk"
	// VMBDAKindVirtualImage attaches a VirtualImage of the attachment's namespace, read-only.
	VMBDAKindVirtualImage VMBDAObjectRefKind = "VirtualImage"
	// VMBDAKindClusterVirtualImage attaches a ClusterVirtualImage, read-only.
	VMBDAKindClusterVirtualImage VMBDAObjectRefKind = "ClusterVirtualImage"
)

// VMBDAObjectRef names the block device to hot-plug.
// +kubebuilder:validation:XValidation:rule="has(self.kind) && has(self.name)",message="blockDeviceRef needs a kind and a name"
type VMBDAObjectRef struct {
	// Kind of the block device: VirtualDisk (attached read-write), VirtualImage or
	// ClusterVirtualImage (attached read-only).
	// +optional
	Kind VMBDAObjectRefKind `json:"kind,omitempty"`
	// Name of the block device (a VirtualDisk or VirtualImage of the attachment's namespace).
	// +kubebuilder:validation:MinLength=1
	// +optional
	Name string `json:"name,omitempty"`
}

// VirtualMachineBlockDeviceAttachmentSpec is the disk to hot-plug and the VM to plug it into.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: delete the attachment (the disk is detached) and create another"
type VirtualMachineBlockDeviceAttachmentSpec struct {
	// VirtualMachineName is the VM of the attachment's namespace that gets the disk.
	// +kubebuilder:validation:MinLength=1
	VirtualMachineName string `json:"virtualMachineName"`
	// BlockDeviceRef is the block device hot-plugged into the VM.
	BlockDeviceRef VMBDAObjectRef `json:"blockDeviceRef"`
}

// BlockDeviceAttachmentPhase is the phase of an attachment.
// +kubebuilder:validation:Enum=Pending;InProgress;Attached;Failed;Terminating
type BlockDeviceAttachmentPhase string

const (
	// BlockDeviceAttachmentPending: waiting for the VM (to exist, to run) or the block device.
	BlockDeviceAttachmentPending BlockDeviceAttachmentPhase = "Pending"
	// BlockDeviceAttachmentInProgress: the disk is being hot-plugged.
	BlockDeviceAttachmentInProgress BlockDeviceAttachmentPhase = "InProgress"
	// BlockDeviceAttachmentAttached: QEMU has the disk in the running VM.
	BlockDeviceAttachmentAttached BlockDeviceAttachmentPhase = "Attached"
	// BlockDeviceAttachmentFailed: the disk cannot be attached (conflict, in use, refused).
	BlockDeviceAttachmentFailed BlockDeviceAttachmentPhase = "Failed"
	// BlockDeviceAttachmentTerminating: the attachment is deleted; the disk is being detached.
	BlockDeviceAttachmentTerminating BlockDeviceAttachmentPhase = "Terminating"
)

// VirtualMachineBlockDeviceAttachmentStatus is the observed attachment.
type VirtualMachineBlockDeviceAttachmentStatus struct {
	// +optional
	Phase BlockDeviceAttachmentPhase `json:"phase,omitempty"`
	// VirtualMachineName is the VM the disk is attached to.
	// +optional
	VirtualMachineName string `json:"virtualMachineName,omitempty"`
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachineBlockDeviceAttachment hot-plugs a disk or an image into a VM: into the
// running VM at once, and into every later start of it, until the attachment is deleted
// (the disk is then detached from the running VM).
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmbda,categories=virtualization
// +kubebuilder:printcolumn:name="PHASE",type=string,JSONPath=`.status.phase`,description="VirtualMachineBlockDeviceAttachment phase."
// +kubebuilder:printcolumn:name="BLOCKDEVICE KIND",type=string,priority=1,JSONPath=`.spec.blockDeviceRef.kind`,description="Attached blockdevice kind."
// +kubebuilder:printcolumn:name="BLOCKDEVICE NAME",type=string,priority=1,JSONPath=`.spec.blockDeviceRef.name`,description="Attached blockdevice name."
// +kubebuilder:printcolumn:name="VIRTUALMACHINE",type=string,JSONPath=`.status.virtualMachineName`,description="Name of the virtual machine the disk is attached to."
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`,description="Time of resource creation."
type VirtualMachineBlockDeviceAttachment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineBlockDeviceAttachmentSpec   `json:"spec"`
	Status VirtualMachineBlockDeviceAttachmentStatus `json:"status,omitempty"`
}

// VirtualMachineBlockDeviceAttachmentList is a list of VirtualMachineBlockDeviceAttachment.
// +kubebuilder:object:root=true
type VirtualMachineBlockDeviceAttachmentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineBlockDeviceAttachment `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachineBlockDeviceAttachment{}, &VirtualMachineBlockDeviceAttachmentList{})
}

// Condition types of a VirtualMachineBlockDeviceAttachment, as Deckhouse names them.
const (
	// VMBDAConditionBlockDeviceReady: the block device exists, is Ready and may be attached
	// to the VM (a VirtualDisk is held by no other VM).
	VMBDAConditionBlockDeviceReady = "BlockDeviceReady"
	// VMBDAConditionVirtualMachineReady: the VM runs, so the disk can be hot-plugged.
	VMBDAConditionVirtualMachineReady = "VirtualMachineReady"
	// VMBDAConditionAttached: QEMU has the disk in the running VM.
	VMBDAConditionAttached = "Attached"
	// VMBDAConditionCapacityAvailable: the VM has room for one more block device
	// (Deckhouse spells the type with "Type" at its end).
	VMBDAConditionCapacityAvailable = "DiskAttachmentCapacityAvailableType"
	// VMBDAConditionTerminating: the attachment is deleted; says what the deletion waits for.
	VMBDAConditionTerminating = "Terminating"
)

// Reasons on VirtualMachineBlockDeviceAttachment conditions, as Deckhouse names them.
const (
	ReasonBlockDeviceReady       = "BlockDeviceReady"
	ReasonBlockDeviceNotReady    = "BlockDeviceNotReady"
	ReasonVirtualMachineReady    = "VirtualMachineReady"
	ReasonVirtualMachineNotReady = "VirtualMachineNotReady"
	ReasonAttached               = "Attached"
	ReasonNotAttached            = "NotAttached"
	ReasonAttachmentRequestSent  = "AttachmentRequestSent"
	// ReasonConflict: another attachment of the VM, created earlier, has the same block
	// device, or the VM's spec.blockDeviceRefs has it.
	ReasonConflict          = "Conflict"
	ReasonCapacityAvailable = "CapacityAvailable"
	ReasonCapacityReached   = "CapacityReached"
	ReasonDetachPending     = "DetachPending"
	// ReasonNotSupported: the block device's kind is one Ferry does not attach yet (a Ferry
	// reason).
	ReasonNotSupported = "NotSupported"
)

// FinalizerVMBDA keeps an attachment until its disk is detached from the VM and released.
const FinalizerVMBDA = "virtualization.ferryvm.io/vmbda"

// VMBlockDeviceLimit is the most block devices a VM has, in spec.blockDeviceRefs and
// attached together (Deckhouse's limit).
const VMBlockDeviceLimit = 16
