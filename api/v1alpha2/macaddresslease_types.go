package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualMachineMACAddressLeaseMACAddressRef names the VirtualMachineMACAddress that
// holds a lease.
type VirtualMachineMACAddressLeaseMACAddressRef struct {
	// Name of the VirtualMachineMACAddress.
	Name string `json:"name"`
	// Namespace of the VirtualMachineMACAddress.
	Namespace string `json:"namespace"`
}

// VirtualMachineMACAddressLeaseSpec says who holds the MAC address.
type VirtualMachineMACAddressLeaseSpec struct {
	// VirtualMachineMACAddressRef is the VirtualMachineMACAddress that holds the address.
	// +optional
	VirtualMachineMACAddressRef *VirtualMachineMACAddressLeaseMACAddressRef `json:"virtualMachineMACAddressRef,omitempty"`
}

// VirtualMachineMACAddressLeasePhase is where a lease is, for people.
// +kubebuilder:validation:Enum=Bound
type VirtualMachineMACAddressLeasePhase string

// VirtualMachineMACAddressLeasePhaseBound: a VirtualMachineMACAddress holds it. Deckhouse
// has no Released phase for MAC leases: a lease whose holder is gone is deleted.
const VirtualMachineMACAddressLeasePhaseBound VirtualMachineMACAddressLeasePhase = "Bound"

// VirtualMachineMACAddressLeaseStatus is what the lease controller observed.
type VirtualMachineMACAddressLeaseStatus struct {
	// +optional
	Phase VirtualMachineMACAddressLeasePhase `json:"phase,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Bound.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// VirtualMachineMACAddressLease reserves one MAC address in the cluster. Its name is the
// address (mac-5e-e6-19-22-0f-d8), so the apiserver itself refuses a second holder of the
// same address.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=vmmacl;vmmaclease,categories=virtualization-cluster
// +kubebuilder:printcolumn:name="VirtualMachineMACAddress",type=string,JSONPath=`.spec.virtualMachineMACAddressRef`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachineMACAddressLease struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec   VirtualMachineMACAddressLeaseSpec   `json:"spec,omitempty"`
	Status VirtualMachineMACAddressLeaseStatus `json:"status,omitempty"`
}

// VirtualMachineMACAddressLeaseList is a list of VirtualMachineMACAddressLease.
// +kubebuilder:object:root=true
type VirtualMachineMACAddressLeaseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineMACAddressLease `json:"items"`
}

// Condition type and reason of a VirtualMachineMACAddressLease (Deckhouse's
// vmmaclcondition).
const (
	MACLeaseConditionBound = "Bound"
	ReasonMACLeaseBound    = "Bound"
)

func init() {
	SchemeBuilder.Register(&VirtualMachineMACAddressLease{}, &VirtualMachineMACAddressLeaseList{})
}
