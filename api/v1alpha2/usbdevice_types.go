package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Deckhouse's USB passthrough kinds. On Deckhouse a DRA driver on each node publishes the
// USB devices it sees, and the module makes one NodeUSBDevice per device; an administrator
// hands a device to a namespace (spec.assignedNamespace), where a USBDevice of the same
// name appears for VMs to name in spec.usbDevices. Ferry has no USB passthrough and does
// not discover USB devices on nodes: it serves both kinds with Deckhouse's schema, and a
// NodeUSBDevice made by hand behaves as Deckhouse's does for a device absent on every
// host (internal/controller/usbdevice).

// NodeUSBDeviceSpec is what the cluster administrator decides about a USB device.
type NodeUSBDeviceSpec struct {
	// AssignedNamespace is the namespace whose VMs may use the device; empty (the
	// default), no namespace may. Set, a USBDevice of the same name is made in that
	// namespace.
	// +kubebuilder:default:=""
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self == '' || self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="assignedNamespace must be the name of a namespace (a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or a digit, at most 63 characters), or empty to assign the device to no namespace"
	// +optional
	AssignedNamespace string `json:"assignedNamespace,omitempty"`
}

// NodeUSBDeviceAttributes describe a USB device as its node's DRA driver published it.
// Ferry has no such driver: it never fills them in.
type NodeUSBDeviceAttributes struct {
	// BCD is the device's release number (binary-coded decimal).
	// +optional
	BCD string `json:"bcd,omitempty"`
	// Bus is the number of the USB bus the device is on.
	// +optional
	Bus string `json:"bus,omitempty"`
	// DeviceNumber is the device's number on its bus.
	// +optional
	DeviceNumber string `json:"deviceNumber,omitempty"`
	// DevicePath is the device's file on its node.
	// +optional
	DevicePath string `json:"devicePath,omitempty"`
	// Major is the major number of the device file.
	// +optional
	Major int `json:"major,omitempty"`
	// Minor is the minor number of the device file.
	// +optional
	Minor int `json:"minor,omitempty"`
	// Speed is the device's USB speed.
	// +optional
	Speed int `json:"speed,omitempty"`
	// Name is the device's name.
	// +optional
	Name string `json:"name,omitempty"`
	// VendorID is the USB vendor ID, in hex.
	// +optional
	VendorID string `json:"vendorID,omitempty"`
	// ProductID is the USB product ID, in hex.
	// +optional
	ProductID string `json:"productID,omitempty"`
	// Serial is the device's serial number.
	// +optional
	Serial string `json:"serial,omitempty"`
	// Manufacturer is the manufacturer's name the device reports.
	// +optional
	Manufacturer string `json:"manufacturer,omitempty"`
	// Product is the product name the device reports.
	// +optional
	Product string `json:"product,omitempty"`
	// NodeName is the node the device is plugged into.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
}

// NodeUSBDeviceStatus is what the USB device controller observed.
type NodeUSBDeviceStatus struct {
	// Attributes of the device (none on Ferry, which discovers no device).
	// +optional
	Attributes NodeUSBDeviceAttributes `json:"attributes,omitempty"`
	// NodeName is the node the device is on (none on Ferry).
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// Conditions: Ready (the device is on its node), Assigned (a namespace has it, through
	// a USBDevice there) and Attached (a VM uses it).
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// NodeUSBDevice is one USB device of a node of the cluster. Ferry discovers none: one made
// by hand is absent on every node (Ready False, NotFound); assigning it to a namespace
// still makes its USBDevice there, as Deckhouse does.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nusb,singular=nodeusbdevice,categories=virtualization
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Assigned",type=string,JSONPath=`.status.conditions[?(@.type=="Assigned")].status`
// +kubebuilder:printcolumn:name="Attached",type=string,JSONPath=`.status.conditions[?(@.type=="Attached")].status`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.assignedNamespace`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeUSBDevice struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeUSBDeviceSpec   `json:"spec"`
	Status NodeUSBDeviceStatus `json:"status,omitempty"`
}

// NodeUSBDeviceList is a list of NodeUSBDevice.
// +kubebuilder:object:root=true
type NodeUSBDeviceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeUSBDevice `json:"items"`
}

// USBDeviceStatus is what the USB device controller observed; it follows the
// NodeUSBDevice the USBDevice was made for.
type USBDeviceStatus struct {
	// Attributes of the device, as its NodeUSBDevice has them (none on Ferry).
	// +optional
	Attributes NodeUSBDeviceAttributes `json:"attributes,omitempty"`
	// NodeName is the node the device is on (none on Ferry).
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// Conditions: Ready (as its NodeUSBDevice's) and Attached (a VM uses it).
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// USBDevice is a USB device that the VMs of its namespace may name in spec.usbDevices. The
// USB device controller makes it when a NodeUSBDevice is assigned to the namespace, and
// removes it when the assignment goes.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=usb,singular=usbdevice,categories=virtualization
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="VendorID",type=string,JSONPath=`.status.attributes.vendorID`,priority=1
// +kubebuilder:printcolumn:name="ProductID",type=string,JSONPath=`.status.attributes.productID`,priority=1
// +kubebuilder:printcolumn:name="Bus",type=string,JSONPath=`.status.attributes.bus`,priority=1
// +kubebuilder:printcolumn:name="DeviceNumber",type=string,JSONPath=`.status.attributes.deviceNumber`,priority=1
// +kubebuilder:printcolumn:name="Manufacturer",type=string,JSONPath=`.status.attributes.manufacturer`
// +kubebuilder:printcolumn:name="Product",type=string,JSONPath=`.status.attributes.product`
// +kubebuilder:printcolumn:name="Serial",type=string,JSONPath=`.status.attributes.serial`,priority=1
// +kubebuilder:printcolumn:name="Attached",type=string,JSONPath=`.status.conditions[?(@.type=="Attached")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type USBDevice struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status USBDeviceStatus `json:"status,omitempty"`
}

// USBDeviceList is a list of USBDevice.
// +kubebuilder:object:root=true
type USBDeviceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []USBDevice `json:"items"`
}

// Kinds, for owner references.
const (
	NodeUSBDeviceKind = "NodeUSBDevice"
	USBDeviceKind     = "USBDevice"
)

// Condition types of NodeUSBDevice and USBDevice (Deckhouse's nodeusbdevicecondition and
// usbdevicecondition): Ready and Attached on both, Assigned on NodeUSBDevice only.
const (
	USBConditionReady    = "Ready"
	USBConditionAssigned = "Assigned"
	USBConditionAttached = "Attached"
)

// Reasons of Ready.
const (
	// ReasonUSBReady: the device is on its node, ready to use (never on Ferry).
	ReasonUSBReady = "Ready"
	// ReasonUSBNotReady: the device is on its node but not ready (never on Ferry).
	ReasonUSBNotReady = "NotReady"
	// ReasonUSBNotFound: the device is absent on the host; on Ferry, always.
	ReasonUSBNotFound = "NotFound"
)

// Reasons of Assigned.
const (
	// ReasonUSBAssigned: a namespace is assigned and the device's USBDevice is there.
	ReasonUSBAssigned = "Assigned"
	// ReasonUSBAssignedAvailable: no namespace is assigned.
	ReasonUSBAssignedAvailable = "Available"
	// ReasonUSBAssignedInProgress: a namespace is assigned, its USBDevice is not made yet
	// (the message says what it waits for).
	ReasonUSBAssignedInProgress = "InProgress"
)

// Reasons of Attached.
const (
	// ReasonUSBAttachedToVirtualMachine: a VM uses the device (never on Ferry).
	ReasonUSBAttachedToVirtualMachine = "AttachedToVirtualMachine"
	// ReasonUSBAttachedAvailable: no VM uses the device. Deckhouse also gives it while a VM
	// asks for the device and it is not attached yet.
	ReasonUSBAttachedAvailable = "Available"
	// ReasonUSBDetachedForMigration: the device was detached while its VM migrates (never
	// on Ferry).
	ReasonUSBDetachedForMigration = "DetachedForMigration"
	// ReasonUSBNoFreeUSBIPPort: a VM asks for the device, and its node has no free USBIP
	// port to reach it over the network (never on Ferry).
	ReasonUSBNoFreeUSBIPPort = "NoFreeUSBIPPort"
)

func init() {
	SchemeBuilder.Register(&NodeUSBDevice{}, &NodeUSBDeviceList{}, &USBDevice{}, &USBDeviceList{})
}
