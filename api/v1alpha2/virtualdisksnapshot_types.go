package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualDiskSnapshotKind is the kind a disk's (or an image's) objectRef names to start
// from a snapshot.
const VirtualDiskSnapshotKind = "VirtualDiskSnapshot"

// VirtualDiskSnapshotSpec is the snapshot asked for.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a VirtualDiskSnapshot's spec cannot change: create another snapshot"
type VirtualDiskSnapshotSpec struct {
	// VirtualDiskName is the disk, in the snapshot's namespace, whose contents the snapshot keeps.
	// +kubebuilder:validation:MinLength=1
	VirtualDiskName string `json:"virtualDiskName"`
	// RequiredConsistency: when true, the snapshot is taken only while no running VM writes
	// to the disk (the disk is attached to no VM, or its VM is Stopped); Ferry cannot yet
	// freeze a running guest's filesystems through its agent, so the snapshot of a running
	// VM's disk waits (Pending) until the VM stops. When false, a running VM's disk is
	// copied as it is at that moment (status.consistent false: the copy may hold
	// half-written data, as after a power cut).
	// +optional
	// +kubebuilder:default=true
	RequiredConsistency bool `json:"requiredConsistency"`
}

// VirtualDiskSnapshotPhase is the snapshot's phase, for people.
// +kubebuilder:validation:Enum=Pending;InProgress;Ready;Failed;Terminating
type VirtualDiskSnapshotPhase string

const (
	// SnapshotPending: waiting for the disk (Ready, not being resized, not written by a
	// running VM when consistency is required).
	SnapshotPending VirtualDiskSnapshotPhase = "Pending"
	// SnapshotInProgress: the disk is being copied.
	SnapshotInProgress VirtualDiskSnapshotPhase = "InProgress"
	// SnapshotReady: the copy is made; disks can be made from it.
	SnapshotReady VirtualDiskSnapshotPhase = "Ready"
	// SnapshotFailed: the copy could not be made or is lost; the condition says why.
	SnapshotFailed VirtualDiskSnapshotPhase = "Failed"
	// SnapshotTerminating: the snapshot is deleted; its file goes once no disk is being
	// made from it.
	SnapshotTerminating VirtualDiskSnapshotPhase = "Terminating"
)

// Condition types and reasons of a VirtualDiskSnapshot (Deckhouse's names).
const (
	// SnapshotConditionDiskReady: whether the source disk can be snapshotted now.
	SnapshotConditionDiskReady = "VirtualDiskReady"
	// SnapshotConditionReady: whether the snapshot is made and can be used.
	SnapshotConditionReady = "VirtualDiskSnapshotReady"

	// Reasons of VirtualDiskReady.
	ReasonSnapshotDiskReady    = "VirtualDiskReady"
	ReasonSnapshotDiskNotReady = "VirtualDiskNotReadyForSnapshotting"

	// Reasons of VirtualDiskSnapshotReady.
	ReasonSnapshotWaitingForDisk = "WaitingForTheVirtualDisk"
	// ReasonSnapshotPotentiallyInconsistent: the disk is attached to a VM that is not
	// Stopped and requiredConsistency is true.
	ReasonSnapshotPotentiallyInconsistent = "PotentiallyInconsistent"
	ReasonSnapshotting                    = "Snapshotting"
	ReasonSnapshotReady                   = "VirtualDiskSnapshotReady"
	ReasonSnapshotFailed                  = "VirtualDiskSnapshotFailed"
	// ReasonSnapshotLost: the snapshot was Ready and its file is gone.
	ReasonSnapshotLost = "Lost"
)

// VirtualDiskSnapshotStatus is the observed snapshot.
type VirtualDiskSnapshotStatus struct {
	// +optional
	Phase VirtualDiskSnapshotPhase `json:"phase,omitempty"`
	// Consistent is true when the disk was copied while no running VM wrote to it, false
	// when it was copied under a running VM (requiredConsistency false). Unset until the
	// copy is made.
	// +optional
	Consistent *bool `json:"consistent,omitempty"`
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status was last written for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualDiskSnapshot is a point-in-time copy of a VirtualDisk, which new disks can be
// made from (dataSource objectRef kind VirtualDiskSnapshot). Ferry keeps it as a
// standalone qcow2 file on its shared storage: no VolumeSnapshot is made.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vdsnapshot;vds,categories=virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Consistent",type=boolean,JSONPath=`.status.consistent`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualDiskSnapshot struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualDiskSnapshotSpec   `json:"spec"`
	Status VirtualDiskSnapshotStatus `json:"status,omitempty"`
}

// VirtualDiskSnapshotList is a list of VirtualDiskSnapshot.
// +kubebuilder:object:root=true
type VirtualDiskSnapshotList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualDiskSnapshot `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualDiskSnapshot{}, &VirtualDiskSnapshotList{})
}
