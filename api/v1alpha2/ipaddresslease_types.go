package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualMachineIPAddressLeaseIPAddressRef names the VirtualMachineIPAddress that holds a
// lease. A released lease keeps the namespace, with an empty name: for its retention time
// only a VirtualMachineIPAddress of that namespace may take the address again.
type VirtualMachineIPAddressLeaseIPAddressRef struct {
	// Name of the VirtualMachineIPAddress ("" once released).
	Name string `json:"name"`
	// Namespace of the VirtualMachineIPAddress.
	Namespace string `json:"namespace"`
}

// VirtualMachineIPAddressLeaseSpec says who holds the address.
type VirtualMachineIPAddressLeaseSpec struct {
	// VirtualMachineIPAddressRef is the VirtualMachineIPAddress that holds the address.
	// +optional
	VirtualMachineIPAddressRef *VirtualMachineIPAddressLeaseIPAddressRef `json:"virtualMachineIPAddressRef,omitempty"`
}

// VirtualMachineIPAddressLeasePhase is where a lease is, for people.
// +kubebuilder:validation:Enum=Bound;Released
type VirtualMachineIPAddressLeasePhase string

const (
	// VirtualMachineIPAddressLeasePhaseBound: a VirtualMachineIPAddress holds it.
	VirtualMachineIPAddressLeasePhaseBound VirtualMachineIPAddressLeasePhase = "Bound"
	// VirtualMachineIPAddressLeasePhaseReleased: none does; it is deleted after the
	// retention time, and until then only its namespace may take it.
	VirtualMachineIPAddressLeasePhaseReleased VirtualMachineIPAddressLeasePhase = "Released"
)

// VirtualMachineIPAddressLeaseStatus is what the lease controller observed.
type VirtualMachineIPAddressLeaseStatus struct {
	// +optional
	Phase VirtualMachineIPAddressLeasePhase `json:"phase,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Bound.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// VirtualMachineIPAddressLease reserves one address of the VM range. Its name is the address
// (ip-10-66-10-14), so the apiserver itself refuses a second holder of the same address.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=vmipl;vmiplease,categories=virtualization-cluster
// +kubebuilder:printcolumn:name="VirtualMachineIPAddress",type=string,JSONPath=`.spec.virtualMachineIPAddressRef`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachineIPAddressLease struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec   VirtualMachineIPAddressLeaseSpec   `json:"spec,omitempty"`
	Status VirtualMachineIPAddressLeaseStatus `json:"status,omitempty"`
}

// VirtualMachineIPAddressLeaseList is a list of VirtualMachineIPAddressLease.
// +kubebuilder:object:root=true
type VirtualMachineIPAddressLeaseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineIPAddressLease `json:"items"`
}

// Condition type and reasons of a VirtualMachineIPAddressLease (Deckhouse's
// vmiplcondition).
const (
	LeaseConditionBound = "Bound"
	ReasonLeaseBound    = "Bound"
	ReasonLeaseReleased = "Released"
)

// LabelLegacyLeaseHolder is on the leases of Ferry's releases before
// VirtualMachineIPAddress: the UID of the VM that held the address (their spec named the
// VM, a field this release's schema prunes). The VirtualMachineIPAddress that Ferry makes
// for that VM takes such a lease over, so a VM keeps its address across the upgrade.
const LabelLegacyLeaseHolder = "virtualization.ferryvm.io/vm-uid"

func init() {
	SchemeBuilder.Register(&VirtualMachineIPAddressLease{}, &VirtualMachineIPAddressLeaseList{})
}
