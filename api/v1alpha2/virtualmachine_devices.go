package v1alpha2

// USBDeviceSpecRef names a USBDevice (of the VM's namespace) to pass through to the VM.
// Ferry has no USB passthrough: a VM that names one does not start, and says why (the
// USBDevice is not found, or not ready: absent on every node).
type USBDeviceSpecRef struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// GPUSpecRef asks for a GPU of a GPUClass (Deckhouse's GPU module, through DRA). Ferry has
// no GPU passthrough: a VM that asks for one does not start, and GPUClassReady says why.
type GPUSpecRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	GPUClassName string `json:"gpuClassName"`
}

// USBAddress is where a USB device sits on the guest's bus.
type USBAddress struct {
	Bus  int `json:"bus,omitempty"`
	Port int `json:"port,omitempty"`
}

// USBDeviceStatusRef is the state of one of spec.usbDevices.
type USBDeviceStatusRef struct {
	Name     string      `json:"name"`
	Attached bool        `json:"attached"`
	Ready    bool        `json:"ready"`
	Address  *USBAddress `json:"address,omitempty"`
	// +optional
	Hotplugged bool `json:"hotplugged,omitempty"`
}

// GPUClassReady is the VM condition that says whether every GPUClass of spec.gpus exists,
// with its reasons (Deckhouse's names).
const (
	VMConditionGPUClassReady = "GPUClassReady"
	ReasonGPUClassNotFound   = "GPUClassNotFound"
	// ReasonUSBDeviceNotFound is the Running condition's reason while a VM waits for a
	// USBDevice it names that does not exist in its namespace.
	ReasonUSBDeviceNotFound = "USBDeviceNotFound"
	// ReasonUSBDeviceNotReady: every USBDevice the VM names exists, and one is not ready
	// (on Ferry, always: the device is absent on every node).
	ReasonUSBDeviceNotReady = "USBDeviceNotReady"
)
