package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualMachineSnapshotKind is the kind of a VM snapshot.
const VirtualMachineSnapshotKind = "VirtualMachineSnapshot"

// KeepIPAddress says whether a VM snapshot keeps the VM's address for a restore.
// +kubebuilder:validation:Enum=Always;Never
type KeepIPAddress string

const (
	// KeepIPAddressAlways: the snapshot records the VM's VirtualMachineIPAddress and its
	// address, and a restore gives the VM that address back.
	KeepIPAddressAlways KeepIPAddress = "Always"
	// KeepIPAddressNever: the snapshot records no address; a restored VM keeps the one it
	// has at restore time.
	KeepIPAddressNever KeepIPAddress = "Never"
)

// VirtualMachineSnapshotSpec is the VM snapshot asked for.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a VirtualMachineSnapshot's spec cannot change: create another snapshot"
type VirtualMachineSnapshotSpec struct {
	// VirtualMachineName is the VM, in the snapshot's namespace, to snapshot.
	// +kubebuilder:validation:MinLength=1
	VirtualMachineName string `json:"virtualMachineName"`
	// RequiredConsistency: when true, the VM's disks are copied only while the VM is
	// Stopped (Ferry cannot yet freeze a running guest's filesystems through its agent), so
	// the snapshot of a running VM waits, Pending, until the VM stops. When false, the disks
	// of a running VM are copied as they are (status.consistent false).
	// +kubebuilder:default=true
	RequiredConsistency bool `json:"requiredConsistency"`
	// KeepIPAddress: Always records the VM's VirtualMachineIPAddress (its name and address)
	// for a restore; Never records none.
	// +kubebuilder:default=Always
	KeepIPAddress KeepIPAddress `json:"keepIPAddress"`
}

// VirtualMachineSnapshotPhase is the VM snapshot's phase, for people.
// +kubebuilder:validation:Enum=Pending;InProgress;Ready;Failed;Terminating
type VirtualMachineSnapshotPhase string

const (
	VMSnapshotPending     VirtualMachineSnapshotPhase = "Pending"
	VMSnapshotInProgress  VirtualMachineSnapshotPhase = "InProgress"
	VMSnapshotReady       VirtualMachineSnapshotPhase = "Ready"
	VMSnapshotFailed      VirtualMachineSnapshotPhase = "Failed"
	VMSnapshotTerminating VirtualMachineSnapshotPhase = "Terminating"
)

// Condition types and reasons of a VirtualMachineSnapshot (Deckhouse's names).
const (
	// VMSnapshotConditionVMReady: whether the VM can be snapshotted now.
	VMSnapshotConditionVMReady = "VirtualMachineReady"
	// VMSnapshotConditionReady: whether the snapshot is taken and can be restored from.
	VMSnapshotConditionReady = "VirtualMachineSnapshotReady"

	// Reasons of VirtualMachineReady.
	ReasonVMSnapshotVMReady    = "VirtualMachineReady"
	ReasonVMSnapshotVMNotReady = "VirtualMachineNotReadyForSnapshotting"

	// Reasons of VirtualMachineSnapshotReady.
	ReasonVMSnapshotWaitingForVM = "WaitingForTheVirtualMachine"
	// ReasonVMSnapshotBlockDevicesNotReady: a disk of the VM is missing, not Ready or
	// being resized.
	ReasonVMSnapshotBlockDevicesNotReady = "BlockDevicesNotReady"
	// ReasonVMSnapshotPotentiallyInconsistent: the VM is not Stopped and
	// requiredConsistency is true.
	ReasonVMSnapshotPotentiallyInconsistent = "PotentiallyInconsistent"
	ReasonVMSnapshotDiskSnapshotLost        = "VirtualDiskSnapshotLost"
	ReasonVMSnapshotting                    = "Snapshotting"
	ReasonVMSnapshotReady                   = "VirtualMachineSnapshotReady"
	ReasonVMSnapshotFailed                  = "VirtualMachineSnapshotFailed"
)

// Keys of a VM snapshot's Secret (status.virtualMachineSnapshotSecretName): what a
// restore or a clone needs besides the disks' contents, as JSON.
const (
	// VMSnapshotSecretVM holds the VM: {"name", "uid", "spec"} at the snapshot's time.
	VMSnapshotSecretVM = "virtualMachine"
	// VMSnapshotSecretDisks holds the VM's disks: a list of {"name", "spec",
	// "virtualDiskSnapshotName"}.
	VMSnapshotSecretDisks = "virtualDisks"
	// VMSnapshotSecretIPAddress holds, with keepIPAddress Always, the VM's address:
	// {"name", "address"}.
	VMSnapshotSecretIPAddress = "virtualMachineIPAddress"
)

// SnapshotResource names one object a VM snapshot keeps.
type SnapshotResource struct {
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// +optional
	Kind string `json:"kind,omitempty"`
	// +optional
	Name string `json:"name,omitempty"`
}

// VirtualMachineSnapshotStatus is the observed VM snapshot.
type VirtualMachineSnapshotStatus struct {
	Phase VirtualMachineSnapshotPhase `json:"phase"`
	// Consistent is true when every disk was copied while the VM was Stopped. Unset until
	// the snapshot is Ready.
	// +optional
	Consistent *bool `json:"consistent,omitempty"`
	// VirtualDiskSnapshotNames are the disk snapshots taken, one per disk of the VM; the VM
	// snapshot owns them.
	// +optional
	VirtualDiskSnapshotNames []string `json:"virtualDiskSnapshotNames,omitempty"`
	// VirtualMachineSnapshotSecretName is the Secret, owned by the snapshot, that keeps the
	// VM's spec, its disks' specs and (keepIPAddress Always) its address.
	// +optional
	VirtualMachineSnapshotSecretName string `json:"virtualMachineSnapshotSecretName,omitempty"`
	// Resources are the objects the snapshot keeps.
	// +optional
	Resources []SnapshotResource `json:"resources,omitempty"`
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachineSnapshot is a point-in-time copy of a VM: a VirtualDiskSnapshot of each
// of its disks and its configuration, which the VM can be restored to (a vmop of type
// Restore) or cloned from.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmsnapshot,categories=virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`,description="VirtualMachineSnapshot phase."
// +kubebuilder:printcolumn:name="Consistent",type=boolean,JSONPath=`.status.consistent`,description="VirtualMachineSnapshot consistency."
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`,description="VirtualMachineSnapshot age."
type VirtualMachineSnapshot struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineSnapshotSpec   `json:"spec"`
	Status VirtualMachineSnapshotStatus `json:"status,omitempty"`
}

// VirtualMachineSnapshotList is a list of VirtualMachineSnapshot.
// +kubebuilder:object:root=true
type VirtualMachineSnapshotList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineSnapshot `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachineSnapshot{}, &VirtualMachineSnapshotList{})
}
