package v1alpha2

// Hot-plugged disks of a running VM, through its launcher pod's annotations (which only
// Ferry's controller and node agents may write: deploy/base's ValidatingAdmissionPolicy
// ferry-launcher-pods). The VM controller names the disks the VM is to have in
// AnnotationHotplug; the node agent hands them to the launcher and reports what QEMU has in
// AnnotationHotplugStatus.
const (
	// AnnotationHotplug on a launcher pod is the disks its VM is to have hot-plugged (JSON
	// []HotplugDevice; absent or [] for none). Written by the VM controller.
	AnnotationHotplug = "virtualization.ferryvm.io/hotplug"
	// AnnotationHotplugStatus on a launcher pod is what its launcher has hot-plugged (JSON
	// []HotplugDeviceStatus). Written by the node agent.
	AnnotationHotplugStatus = "virtualization.ferryvm.io/hotplug-status"
)

// HotplugDevice is a disk a VM is to have hot-plugged. It is not an API object.
// +kubebuilder:object:generate=false
type HotplugDevice struct {
	// Slot is the device's PCI slot (16-31), kept across migrations.
	Slot int `json:"slot"`
	// Name is the VirtualMachineBlockDeviceAttachment's.
	Name string `json:"name"`
	// Path is the disk's file, derived by the controller from the block device's identity.
	Path     string `json:"path"`
	Format   string `json:"format"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// HotplugDeviceStatus is a hot-plugged disk as the launcher reports it. It is not an API
// object.
// +kubebuilder:object:generate=false
type HotplugDeviceStatus struct {
	HotplugDevice `json:",inline"`
	// Target is QEMU's name of the device (hotplug-<slot>).
	Target string `json:"target,omitempty"`
	// State is attaching, attached (QEMU has the device), detaching or failed.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// States of a hot-plugged disk (HotplugDeviceStatus.State).
const (
	HotplugAttaching = "attaching"
	HotplugAttached  = "attached"
	HotplugDetaching = "detaching"
	HotplugFailed    = "failed"
)

// HotplugSlot is a hot-plugged disk of a migration target (MigrationRequest.BlockDevices).
// It is not an API object.
// +kubebuilder:object:generate=false
type HotplugSlot struct {
	Slot int    `json:"slot"`
	Path string `json:"path"`
}
