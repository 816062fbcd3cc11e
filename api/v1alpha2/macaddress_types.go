package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualMachineMACAddressSpec is the MAC address a VirtualMachineMACAddress asks for.
// +kubebuilder:validation:XValidation:rule="has(self.address) == has(oldSelf.address) && (!has(self.address) || self.address == oldSelf.address)",message="spec.address cannot be set, changed or removed once the VirtualMachineMACAddress exists: a VM's NIC may use it; create another VirtualMachineMACAddress for another address"
type VirtualMachineMACAddressSpec struct {
	// Address is the MAC address asked for, six pairs of hex digits separated by colons
	// or dashes (52:54:00:12:34:56). Empty, Ferry allocates a free one in the cluster's
	// locally administered prefix (package macaddr). A unicast address only (the lowest
	// bit of the first octet clear), and not all zeros.
	// +kubebuilder:validation:MaxLength=17
	// +kubebuilder:validation:Pattern=`^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$`
	// +kubebuilder:validation:XValidation:rule="self.substring(1, 2) in ['0','2','4','6','8','a','c','e','A','C','E']",message="address must be a unicast MAC address: the first octet must be even (for example 02:..., not 01:... or 03:..., which are multicast)"
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$') || self.matches('^([0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2}$')",message="address must separate its six pairs of hex digits all with colons or all with dashes, such as 02:00:00:12:34:56"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(00[:-]){5}00$')",message="address 00:00:00:00:00:00 is not a usable MAC address"
	// +optional
	Address string `json:"address,omitempty"`
}

// VirtualMachineMACAddressPhase is where a VirtualMachineMACAddress is, for people.
// +kubebuilder:validation:Enum=Pending;Bound;Attached
type VirtualMachineMACAddressPhase string

const (
	// VirtualMachineMACAddressPhasePending: no lease holds the MAC address for it yet.
	VirtualMachineMACAddressPhasePending VirtualMachineMACAddressPhase = "Pending"
	// VirtualMachineMACAddressPhaseBound: a VirtualMachineMACAddressLease holds its address.
	VirtualMachineMACAddressPhaseBound VirtualMachineMACAddressPhase = "Bound"
	// VirtualMachineMACAddressPhaseAttached: bound, and a VirtualMachine's NIC uses it.
	VirtualMachineMACAddressPhaseAttached VirtualMachineMACAddressPhase = "Attached"
)

// VirtualMachineMACAddressStatus is what the MAC address controller observed.
type VirtualMachineMACAddressStatus struct {
	// Address is the MAC address its lease holds, in lower case with colons.
	// +optional
	Address string `json:"address,omitempty"`
	// VirtualMachine is the VM (in the same namespace) whose NIC uses the address.
	// +optional
	VirtualMachine string `json:"virtualMachineName,omitempty"`
	// +optional
	Phase VirtualMachineMACAddressPhase `json:"phase,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Bound (a lease holds the address) and Attached (a VM uses it).
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// VirtualMachineMACAddress reserves a MAC address for a NIC of a VM of its namespace: it
// takes a VirtualMachineMACAddressLease, and one VM at a time uses it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmmac,categories=virtualization
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.address`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="VM",type=string,JSONPath=`.status.virtualMachineName`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachineMACAddress struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec   VirtualMachineMACAddressSpec   `json:"spec,omitempty"`
	Status VirtualMachineMACAddressStatus `json:"status,omitempty"`
}

// VirtualMachineMACAddressList is a list of VirtualMachineMACAddress.
// +kubebuilder:object:root=true
type VirtualMachineMACAddressList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineMACAddress `json:"items"`
}

// Condition types of a VirtualMachineMACAddress (Deckhouse's vmmaccondition).
const (
	// MACAddressConditionBound is True when a lease holds the address for it.
	MACAddressConditionBound = "Bound"
	// MACAddressConditionAttached is True when a VM uses it.
	MACAddressConditionAttached = "Attached"
)

// Reasons on VirtualMachineMACAddress conditions (Deckhouse's).
const (
	// ReasonMACAddressLeaseAlreadyExists: another VirtualMachineMACAddress, of this or
	// another namespace, holds the lease of the address asked for.
	ReasonMACAddressLeaseAlreadyExists = "VirtualMachineMACAddressLeaseAlreadyExists"
	// ReasonMACAddressLeaseLost: the address was bound, and its lease is gone and was taken
	// by someone else.
	ReasonMACAddressLeaseLost = "VirtualMachineMACAddressLeaseLost"
	// ReasonMACAddressLeaseNotFound: no lease yet (being created).
	ReasonMACAddressLeaseNotFound = "VirtualMachineMACAddressLeaseNotFound"
	// ReasonMACAddressLeaseNotReady: the lease is not bound to it yet.
	ReasonMACAddressLeaseNotReady = "VirtualMachineMACAddressLeaseNotReady"
	ReasonMACAddressBound         = "Bound"
	// ReasonMACAddressVMNotFound: no VM uses the address.
	ReasonMACAddressVMNotFound = "VirtualMachineNotFound"
	ReasonMACAddressAttached   = "Attached"
)

const (
	// LabelVirtualMachineMACAddressUID on a MAC lease: the UID of the
	// VirtualMachineMACAddress that holds it.
	LabelVirtualMachineMACAddressUID = "virtualization.deckhouse.io/virtual-machine-mac-address-uid"
	// FinalizerMACAddress keeps a VirtualMachineMACAddress while a VM uses its address.
	FinalizerMACAddress = "virtualization.ferryvm.io/vmmac"
)

func init() {
	SchemeBuilder.Register(&VirtualMachineMACAddress{}, &VirtualMachineMACAddressList{})
}
