package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VirtualMachineRef names a VM across namespaces.
type VirtualMachineRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid,omitempty"`
}

// VirtualMachineIPAddressLeaseSpec says who holds the address.
type VirtualMachineIPAddressLeaseSpec struct {
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a lease cannot change hands; delete it first"
	VirtualMachineRef VirtualMachineRef `json:"virtualMachineRef"`
}

// VirtualMachineIPAddressLease reserves one address of the VM range. Its name is the address
// (ip-10-66-10-14), so the apiserver itself refuses a second holder of the same address.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=vmipl;vmipls,categories=virtualization
// +kubebuilder:printcolumn:name="VirtualMachine",type=string,JSONPath=`.spec.virtualMachineRef.name`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.virtualMachineRef.namespace`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachineIPAddressLease struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec VirtualMachineIPAddressLeaseSpec `json:"spec"`
}

// VirtualMachineIPAddressLeaseList is a list of VirtualMachineIPAddressLease.
// +kubebuilder:object:root=true
type VirtualMachineIPAddressLeaseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineIPAddressLease `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachineIPAddressLease{}, &VirtualMachineIPAddressLeaseList{})
}
