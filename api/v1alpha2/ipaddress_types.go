package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualMachineIPAddressType says how a VirtualMachineIPAddress gets its address.
// +kubebuilder:validation:Enum=Auto;Static
type VirtualMachineIPAddressType string

const (
	// VirtualMachineIPAddressTypeAuto takes a free address of the VM range.
	VirtualMachineIPAddressTypeAuto VirtualMachineIPAddressType = "Auto"
	// VirtualMachineIPAddressTypeStatic takes spec.staticIP, and no other.
	VirtualMachineIPAddressTypeStatic VirtualMachineIPAddressType = "Static"
)

// VirtualMachineIPAddressSpec is the address a VirtualMachineIPAddress asks for.
// +kubebuilder:validation:XValidation:rule="self.type != 'Static' || (has(self.staticIP) && size(self.staticIP) > 0)",message="staticIP is required with type Static"
// +kubebuilder:validation:XValidation:rule="self.type != 'Auto' || !has(self.staticIP) || size(self.staticIP) == 0",message="staticIP must be empty with type Auto (use type Static to ask for an address)"
type VirtualMachineIPAddressSpec struct {
	// Type is Auto (a free address of the VM range) or Static (spec.staticIP).
	Type VirtualMachineIPAddressType `json:"type"`
	// StaticIP is the address asked for; required with type Static only.
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",message="staticIP must be an IPv4 address such as 10.66.10.20"
	// +optional
	StaticIP string `json:"staticIP,omitempty"`
}

// VirtualMachineIPAddressPhase is where a VirtualMachineIPAddress is, for people.
// +kubebuilder:validation:Enum=Pending;Bound;Attached
type VirtualMachineIPAddressPhase string

const (
	// VirtualMachineIPAddressPhasePending: no lease holds the address for it yet.
	VirtualMachineIPAddressPhasePending VirtualMachineIPAddressPhase = "Pending"
	// VirtualMachineIPAddressPhaseBound: a VirtualMachineIPAddressLease holds its address.
	VirtualMachineIPAddressPhaseBound VirtualMachineIPAddressPhase = "Bound"
	// VirtualMachineIPAddressPhaseAttached: bound, and a VirtualMachine uses it.
	VirtualMachineIPAddressPhaseAttached VirtualMachineIPAddressPhase = "Attached"
)

// VirtualMachineIPAddressStatus is what the address controller observed.
type VirtualMachineIPAddressStatus struct {
	// Address is the address its lease holds.
	// +optional
	Address string `json:"address,omitempty"`
	// VirtualMachine is the VM (in the same namespace) that uses the address.
	// +optional
	VirtualMachine string `json:"virtualMachineName,omitempty"`
	// +optional
	Phase VirtualMachineIPAddressPhase `json:"phase,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Bound (a lease holds the address) and Attached (a VM uses it).
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// VirtualMachineIPAddress reserves an address of the VM range for the VMs of its
// namespace: it takes a VirtualMachineIPAddressLease, and one VM at a time uses it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vmip,categories=virtualization
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.address`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="VM",type=string,JSONPath=`.status.virtualMachineName`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachineIPAddress struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineIPAddressSpec   `json:"spec"`
	Status VirtualMachineIPAddressStatus `json:"status,omitempty"`
}

// VirtualMachineIPAddressList is a list of VirtualMachineIPAddress.
// +kubebuilder:object:root=true
type VirtualMachineIPAddressList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineIPAddress `json:"items"`
}

// Condition types of a VirtualMachineIPAddress (Deckhouse's vmipcondition).
const (
	// IPAddressConditionBound is True when a lease holds the address for it.
	IPAddressConditionBound = "Bound"
	// IPAddressConditionAttached is True when a VM uses it.
	IPAddressConditionAttached = "Attached"
)

// Reasons on VirtualMachineIPAddress conditions (Deckhouse's).
const (
	// ReasonIPAddressOutOfRange: spec.staticIP is not an address of the VM range.
	ReasonIPAddressOutOfRange = "VirtualMachineIPAddressIsOutOfTheValidRange"
	// ReasonIPAddressLeaseAlreadyExists: another VirtualMachineIPAddress (or another
	// namespace, for a released address) holds the lease of the address.
	ReasonIPAddressLeaseAlreadyExists = "VirtualMachineIPAddressLeaseAlreadyExists"
	// ReasonIPAddressLeaseLost: the address was bound, and its lease is gone and was taken
	// by someone else.
	ReasonIPAddressLeaseLost = "VirtualMachineIPAddressLeaseLost"
	// ReasonIPAddressLeaseNotFound: no lease yet (being created).
	ReasonIPAddressLeaseNotFound = "VirtualMachineIPAddressLeaseNotFound"
	// ReasonIPAddressLeaseNotReady: the lease is not bound to it yet, or the range is full.
	ReasonIPAddressLeaseNotReady = "VirtualMachineIPAddressLeaseNotReady"
	ReasonIPAddressBound         = "Bound"
	// ReasonIPAddressVMNotFound: no VM uses the address.
	ReasonIPAddressVMNotFound = "VirtualMachineNotFound"
	ReasonIPAddressAttached   = "Attached"
)

// Labels that tie addresses to their users (Deckhouse's names).
const (
	// LabelVirtualMachineUID on a VirtualMachineIPAddress that Ferry made for a VM: that
	// VM's UID.
	LabelVirtualMachineUID = "virtualization.deckhouse.io/virtual-machine-uid"
	// LabelVirtualMachineIPAddressUID on a lease: the UID of the VirtualMachineIPAddress
	// that holds it.
	LabelVirtualMachineIPAddressUID = "virtualization.deckhouse.io/virtual-machine-ip-address-uid"
	// FinalizerIPAddress keeps a VirtualMachineIPAddress while a VM uses its address.
	FinalizerIPAddress = "virtualization.ferryvm.io/vmip"
)

func init() {
	SchemeBuilder.Register(&VirtualMachineIPAddress{}, &VirtualMachineIPAddressList{})
}
