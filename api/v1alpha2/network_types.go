package v1alpha2

// NetworkType is the kind of network a VM's interface joins (Deckhouse's names).
// +kubebuilder:validation:Enum=Main;Network;ClusterNetwork
type NetworkType string

const (
	// NetworkTypeMain is the cluster's VM network: Ferry's routed VM address ranges.
	NetworkTypeMain NetworkType = "Main"
	// NetworkTypeNetwork and NetworkTypeClusterNetwork are Deckhouse's additional networks
	// (its sdn module); Ferry has none and refuses them.
	NetworkTypeNetwork        NetworkType = "Network"
	NetworkTypeClusterNetwork NetworkType = "ClusterNetwork"
)

// NetworksSpec is one network interface of a VM.
type NetworksSpec struct {
	// Type of the network: Ferry has Main only.
	Type NetworkType `json:"type"`
	// ID of the interface.
	// +optional
	ID *int `json:"id,omitempty"`
	// Name of the network (for Network and ClusterNetwork).
	// +kubebuilder:validation:MinLength=1
	// +optional
	Name string `json:"name,omitempty"`
	// VirtualMachineMACAddressName names the VirtualMachineMACAddress (in the VM's
	// namespace) whose address the interface gets; empty: Ferry makes one for the VM,
	// owned by it, with a free address.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	VirtualMachineMACAddressName string `json:"virtualMachineMACAddressName,omitempty"`
}

// NetworksStatus is one network interface of a VM as it was given.
type NetworksStatus struct {
	// Type of the network (a NetworkType).
	Type string `json:"type"`
	// ID of the interface.
	// +optional
	ID *int `json:"id,omitempty"`
	// Name of the network.
	// +optional
	Name string `json:"name,omitempty"`
	// MACAddress of the interface.
	// +optional
	MACAddress string `json:"macAddress,omitempty"`
	// VirtualMachineMACAddressName is the VirtualMachineMACAddress that holds MACAddress.
	// +optional
	VirtualMachineMACAddressName string `json:"virtualMachineMACAddressName,omitempty"`
}

// MainMACAddressName is the VirtualMachineMACAddress the VM's spec names for its main
// network's interface, or "".
func (vm *VirtualMachine) MainMACAddressName() string {
	for _, n := range vm.Spec.Networks {
		if n.Type == NetworkTypeMain {
			return n.VirtualMachineMACAddressName
		}
	}
	return ""
}

// MainNetworkStatus is the VM's recorded main interface, or nil.
func (vm *VirtualMachine) MainNetworkStatus() *NetworksStatus {
	for i := range vm.Status.Networks {
		if vm.Status.Networks[i].Type == string(NetworkTypeMain) {
			return &vm.Status.Networks[i]
		}
	}
	return nil
}

// VM condition and reasons of the VM's MAC address (Deckhouse's vmcondition).
const (
	// VMConditionMACAddressReady is True when the VirtualMachineMACAddress of the VM's
	// main interface is bound and attached to it.
	VMConditionMACAddressReady = "VirtualMachineMACAddressReady"
	ReasonMACReady             = "VirtualMachineMACAddressReady"
	// ReasonMACNotReady: the VirtualMachineMACAddress is missing, not bound yet, or used by
	// another VM.
	ReasonMACNotReady = "VirtualMachineMACAddressNotReady"
	// ReasonMACNotAvailable: it cannot be bound (its address is held by another).
	ReasonMACNotAvailable = "VirtualMachineMACAddressNotAvailable"
)
