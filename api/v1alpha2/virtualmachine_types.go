package v1alpha2

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// RunPolicy says when a virtual machine should be running.
// +kubebuilder:validation:Enum=AlwaysOn;AlwaysOff;Manual;AlwaysOnUnlessStoppedManually
type RunPolicy string

const (
	// AlwaysOn keeps the VM running: it is started again after any stop or crash.
	AlwaysOn RunPolicy = "AlwaysOn"
	// AlwaysOff keeps the VM off.
	AlwaysOff RunPolicy = "AlwaysOff"
	// Manual leaves the VM's state to the user: Ferry neither starts nor stops it on its own.
	Manual RunPolicy = "Manual"
	// AlwaysOnUnlessStoppedManually restarts the VM after a crash, but not after a Stop
	// operation or a shutdown from inside the guest.
	AlwaysOnUnlessStoppedManually RunPolicy = "AlwaysOnUnlessStoppedManually"
)

// LiveMigrationPolicy says how a live migration may be forced to converge.
// +kubebuilder:validation:Enum=AlwaysSafe;PreferSafe;AlwaysForced;PreferForced
type LiveMigrationPolicy string

const (
	AlwaysSafe   LiveMigrationPolicy = "AlwaysSafe"
	PreferSafe   LiveMigrationPolicy = "PreferSafe"
	AlwaysForced LiveMigrationPolicy = "AlwaysForced"
	PreferForced LiveMigrationPolicy = "PreferForced"
)

// MachinePhase is the phase of a VM shown to people; code decides from conditions.
// +kubebuilder:validation:Enum=Pending;Starting;Running;Migrating;Stopping;Stopped;Terminating;Degraded
type MachinePhase string

const (
	MachinePending     MachinePhase = "Pending"
	MachineStarting    MachinePhase = "Starting"
	MachineRunning     MachinePhase = "Running"
	MachineMigrating   MachinePhase = "Migrating"
	MachineStopping    MachinePhase = "Stopping"
	MachineStopped     MachinePhase = "Stopped"
	MachineTerminating MachinePhase = "Terminating"
	MachineDegraded    MachinePhase = "Degraded"
)

// CPUSpec is the VM's processor.
type CPUSpec struct {
	// Cores is the number of virtual CPU cores.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +kubebuilder:default=1
	Cores int `json:"cores"`
	// CoreFraction is the guaranteed share of each core, as in Deckhouse ("1%" to "100%";
	// 100% when empty). Deckhouse's pattern also admits "Auto", which its Vertical
	// VirtualMachine Autoscaler (EE) manages; Ferry has no autoscaler and refuses it.
	// +kubebuilder:validation:Pattern=`^(Auto|(100|[1-9][0-9]?)%)$`
	// +kubebuilder:validation:XValidation:rule="self != 'Auto'",message="coreFraction Auto needs the Vertical VirtualMachine Autoscaler, which Ferry does not have: set a percentage from 1% to 100%"
	// +optional
	CoreFraction string `json:"coreFraction,omitempty"`
}

// MemorySpec is the VM's memory.
type MemorySpec struct {
	// Size of the guest's memory, at least 96Mi (smaller guests do not boot).
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || quantity(string(self)).compareTo(quantity('96Mi')) >= 0",message="memory.size must be at least 96Mi"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || quantity(string(self)).compareTo(quantity('256Gi')) <= 0",message="memory.size must be at most 256Gi"
	Size resource.Quantity `json:"size"`
}

// BlockDeviceKind names the kind of object a block device reference points to.
// +kubebuilder:validation:Enum=VirtualDisk;VirtualImage;ClusterVirtualImage
type BlockDeviceKind string

const (
	DiskDevice         BlockDeviceKind = "VirtualDisk"
	ClusterImageDevice BlockDeviceKind = "ClusterVirtualImage"
	// ImageDevice is a VirtualImage of the VM's namespace.
	ImageDevice BlockDeviceKind = "VirtualImage"
)

// BlockDeviceRef attaches a disk or an image to the VM; the first one boots.
type BlockDeviceRef struct {
	Kind BlockDeviceKind `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// BootOrder is the device's place in the boot order, as Deckhouse's: a smaller value
	// boots first. Set on no device, the devices boot in list order; set on some, only
	// those are offered to the firmware, in the order of their values (QEMU's bootindex).
	// +kubebuilder:validation:Minimum=1
	// +optional
	BootOrder *int `json:"bootOrder,omitempty"`
}

// VirtualMachineSpec is the desired VM.
// +kubebuilder:validation:XValidation:rule="has(self.osType) && self.osType == 'Legacy' ? !has(self.bootloader) || self.bootloader == 'BIOS' : true",message="The Legacy osType requires the BIOS bootloader."
// +kubebuilder:validation:XValidation:rule="has(self.osType) && self.osType == 'Legacy' ? !has(self.provisioning) : true",message="The Legacy osType does not support provisioning: such operating systems have no cloud-init or Sysprep support."
// +kubebuilder:validation:XValidation:rule="has(self.osType) && self.osType == 'Legacy' && has(self.enableParavirtualization) && !self.enableParavirtualization ? size(self.blockDeviceRefs) <= 4 : true",message="The Legacy osType with enableParavirtualization=false supports at most 4 block devices."
type VirtualMachineSpec struct {
	// +kubebuilder:default=AlwaysOnUnlessStoppedManually
	// +optional
	RunPolicy RunPolicy `json:"runPolicy,omitempty"`
	// +kubebuilder:default=PreferSafe
	// +optional
	LiveMigrationPolicy LiveMigrationPolicy `json:"liveMigrationPolicy,omitempty"`
	// Bootloader is the VM's firmware: BIOS (SeaBIOS), EFI (OVMF) or EFIWithSecureBoot
	// (OVMF with Secure Boot and Microsoft's keys enrolled). The EFI variables are kept per
	// VM on the shared storage, so they survive restarts and migrations.
	// +kubebuilder:default=BIOS
	// +optional
	Bootloader Bootloader `json:"bootloader,omitempty"`
	// VirtualMachineClassName is the VirtualMachineClass of the VM: its CPU model, sizing
	// policies and placement. Left out, Ferry's mutating webhook fills it in when the VM
	// is created: with the class annotated
	// virtualmachineclass.virtualization.deckhouse.io/is-default-class=true, or with
	// generic while no class is the default (Ferry's older manifests name none).
	// Deckhouse lists the field as required and fills it in the same way; it is optional
	// here because a CRD default is applied before any webhook sees the VM (it would hide
	// that the field was left out), and a controller run without webhooks treats an empty
	// one as generic.
	// +kubebuilder:validation:MinLength=1
	// +optional
	VirtualMachineClassName string     `json:"virtualMachineClassName,omitempty"`
	CPU                     CPUSpec    `json:"cpu"`
	Memory                  MemorySpec `json:"memory"`
	// BlockDeviceRefs are the VM's disks in boot order.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, a.kind == b.kind && a.name == b.name))",message="blockDeviceRefs must not name the same device twice"
	// +kubebuilder:validation:XValidation:rule="self.all(a, !has(a.bootOrder) || self.exists_one(b, has(b.bootOrder) && b.bootOrder == a.bootOrder))",message="blockDeviceRefs must not give two devices the same bootOrder"
	BlockDeviceRefs []BlockDeviceRef `json:"blockDeviceRefs"`
	// USBDevices are USB devices to pass through (USBDevice names of the VM's namespace).
	// Accepted for Deckhouse's manifests; Ferry has no USB passthrough, so such a VM does
	// not start and says why.
	// +kubebuilder:validation:MaxItems=8
	// +optional
	USBDevices []USBDeviceSpecRef `json:"usbDevices,omitempty"`
	// GPUs ask for GPUs by GPUClass. Accepted for Deckhouse's manifests; Ferry has no GPU
	// passthrough, so such a VM does not start and GPUClassReady says why.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	GPUs []GPUSpecRef `json:"gpus,omitempty"`
	// VirtualMachineIPAddressName names the VirtualMachineIPAddress (in the VM's namespace)
	// whose address the VM gets; empty: Ferry makes one of type Auto for the VM, owned by it.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	VirtualMachineIPAddressName string `json:"virtualMachineIPAddressName,omitempty"`
	// VirtualMachineIPAddress (Ferry only, kept for older manifests) asks for a particular
	// address of the VM range: Ferry makes a VirtualMachineIPAddress of type Static with it
	// for the VM, owned by it. Not together with virtualMachineIPAddressName.
	// +kubebuilder:validation:XValidation:rule="self == '' || isIP(self)",message="virtualMachineIPAddress must be an IPv4 address such as 10.66.10.20"
	// +optional
	VirtualMachineIPAddress string `json:"virtualMachineIPAddress,omitempty"`
	// Networks are the VM's network interfaces. Ferry has the main network only: at most
	// one entry, of type Main, which may name the VirtualMachineMACAddress of the
	// interface. Left out, the VM has its main interface all the same.
	// +kubebuilder:validation:MaxItems=1
	// +kubebuilder:validation:XValidation:rule="self.all(n, n.type == 'Main')",message="networks: Ferry has the main network only (type Main); additional networks (Network, ClusterNetwork) need Deckhouse's sdn module"
	// +optional
	Networks []NetworksSpec `json:"networks,omitempty"`
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// +optional
	Affinity *VirtualMachineAffinity `json:"affinity,omitempty"`
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=60
	// +optional
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
	// +optional
	Provisioning *Provisioning `json:"provisioning,omitempty"`

	// Deckhouse's fields of how the VM's machine is built and placed, and of how changes
	// that need a restart are applied (vmfields).

	// OSType picks the virtual hardware suited to the guest (see OSType).
	// +kubebuilder:default=Generic
	// +optional
	OSType OSType `json:"osType,omitempty"`
	// EnableParavirtualization gives the guest virtio devices (disks, NIC); false gives it
	// emulated ones that need no virtio driver (SATA disks and an e1000 NIC; IDE disks and
	// an RTL8139 NIC with osType Legacy).
	// +kubebuilder:default=true
	// +optional
	EnableParavirtualization *bool `json:"enableParavirtualization,omitempty"`
	// Disruptions says how changes that need a restart are applied.
	// +kubebuilder:default={restartApprovalMode: Manual}
	// +optional
	Disruptions *Disruptions `json:"disruptions,omitempty"`
	// PriorityClassName is the launcher pod's priority class.
	// +kubebuilder:validation:MinLength=1
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// TopologySpreadConstraints spread the VM's launcher pod as a pod's would; their label
	// selectors see VMs too (a launcher pod carries its VM's labels).
	// +optional
	TopologySpreadConstraints []TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`
}

// OSType is the kind of guest operating system, as Deckhouse names it.
// +kubebuilder:validation:Enum=Windows;Generic;Legacy
type OSType string

const (
	// OSGeneric: Linux and other systems with virtio drivers.
	OSGeneric OSType = "Generic"
	// OSWindows: the guest's clock runs in local time, and under KVM the vCPUs carry
	// Hyper-V enlightenments (QEMU offers none under TCG).
	OSWindows OSType = "Windows"
	// OSLegacy: systems without AHCI or virtio drivers: BIOS only, and with
	// enableParavirtualization false IDE disks and an RTL8139 NIC.
	OSLegacy OSType = "Legacy"
)

// Bootloader is a VM's firmware.
// +kubebuilder:validation:Enum=BIOS;EFI;EFIWithSecureBoot
type Bootloader string

const (
	BootBIOS              Bootloader = "BIOS"
	BootEFI               Bootloader = "EFI"
	BootEFIWithSecureBoot Bootloader = "EFIWithSecureBoot"
)

// RestartApprovalMode says who restarts a VM whose changes need a restart.
// +kubebuilder:validation:Enum=Manual;Automatic
type RestartApprovalMode string

const (
	// RestartManual: the changes wait for the user's restart (a Restart operation).
	RestartManual RestartApprovalMode = "Manual"
	// RestartAutomatic: Ferry restarts the VM as soon as such a change is saved.
	RestartAutomatic RestartApprovalMode = "Automatic"
)

// Disruptions is how a VM takes changes that need a restart.
type Disruptions struct {
	// +optional
	RestartApprovalMode RestartApprovalMode `json:"restartApprovalMode,omitempty"`
}

// VirtualMachineAffinity is a pod's affinity with Deckhouse's names: its
// virtualMachineAndPodAffinity and virtualMachineAndPodAntiAffinity select launcher pods,
// which carry their VM's labels, and other pods. Ferry's earlier podAffinity and
// podAntiAffinity are kept; both spellings apply together.
type VirtualMachineAffinity struct {
	// +optional
	NodeAffinity *corev1.NodeAffinity `json:"nodeAffinity,omitempty"`
	// +optional
	VirtualMachineAndPodAffinity *VirtualMachineAndPodAffinity `json:"virtualMachineAndPodAffinity,omitempty"`
	// +optional
	VirtualMachineAndPodAntiAffinity *VirtualMachineAndPodAffinity `json:"virtualMachineAndPodAntiAffinity,omitempty"`
	// PodAffinity is Ferry's earlier spelling of virtualMachineAndPodAffinity.
	// +optional
	PodAffinity *corev1.PodAffinity `json:"podAffinity,omitempty"`
	// PodAntiAffinity is Ferry's earlier spelling of virtualMachineAndPodAntiAffinity.
	// +optional
	PodAntiAffinity *corev1.PodAntiAffinity `json:"podAntiAffinity,omitempty"`
}

// VirtualMachineAndPodAffinity is a pod (anti-)affinity whose weighted terms are named
// virtualMachineAndPodAffinityTerm.
type VirtualMachineAndPodAffinity struct {
	// +optional
	RequiredDuringSchedulingIgnoredDuringExecution []corev1.PodAffinityTerm `json:"requiredDuringSchedulingIgnoredDuringExecution,omitempty"`
	// +optional
	PreferredDuringSchedulingIgnoredDuringExecution []WeightedVirtualMachineAndPodAffinityTerm `json:"preferredDuringSchedulingIgnoredDuringExecution,omitempty"`
}

// WeightedVirtualMachineAndPodAffinityTerm is a preferred term and its weight.
type WeightedVirtualMachineAndPodAffinityTerm struct {
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Weight                           int32                  `json:"weight"`
	VirtualMachineAndPodAffinityTerm corev1.PodAffinityTerm `json:"virtualMachineAndPodAffinityTerm"`
}

// TopologySpreadConstraint is a pod's topology spread constraint with Deckhouse's fields.
type TopologySpreadConstraint struct {
	// +kubebuilder:validation:Minimum=1
	MaxSkew     int32  `json:"maxSkew"`
	TopologyKey string `json:"topologyKey"`
	// Checked at admission (an enum), where Deckhouse leaves it to the pod's creation.
	// +kubebuilder:validation:Enum=DoNotSchedule;ScheduleAnyway
	WhenUnsatisfiable corev1.UnsatisfiableConstraintAction `json:"whenUnsatisfiable"`
	// +optional
	LabelSelector *metav1.LabelSelector `json:"labelSelector,omitempty"`
}

// MigrationResult is how a migration ended.
type MigrationResult string

const (
	MigrationSucceeded MigrationResult = "Succeeded"
	MigrationFailed    MigrationResult = "Failed"
)

// MigrationEndpoint is one side of a migration.
type MigrationEndpoint struct {
	Node string `json:"node,omitempty"`
	Pod  string `json:"pod,omitempty"`
}

// MigrationState records the last live migration of the VM.
type MigrationState struct {
	StartTimestamp *metav1.Time      `json:"startTimestamp,omitempty"`
	EndTimestamp   *metav1.Time      `json:"endTimestamp,omitempty"`
	Source         MigrationEndpoint `json:"source,omitempty"`
	Target         MigrationEndpoint `json:"target,omitempty"`
	Result         MigrationResult   `json:"result,omitempty"`
}

// VirtualMachinePod is a launcher pod of the VM.
type VirtualMachinePod struct {
	Name   string `json:"name"`
	Active bool   `json:"active"`
}

// GuestOSInfo is what the QEMU guest agent tells about the guest's operating system, with
// the names KubeVirt and Deckhouse show.
type GuestOSInfo struct {
	// +optional
	ID string `json:"id,omitempty"`
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	PrettyName string `json:"prettyName,omitempty"`
	// +optional
	Version string `json:"version,omitempty"`
	// +optional
	VersionID string `json:"versionId,omitempty"`
	// +optional
	KernelRelease string `json:"kernelRelease,omitempty"`
	// +optional
	KernelVersion string `json:"kernelVersion,omitempty"`
	// +optional
	Machine string `json:"machine,omitempty"`
}

// GuestInterface is a network interface of the guest as its agent reports it.
type GuestInterface struct {
	Name string `json:"name"`
	// +optional
	MAC string `json:"mac,omitempty"`
	// +optional
	IPAddresses []string `json:"ipAddresses,omitempty"`
}

// GuestStatus is what the platform last heard from inside the guest.
type GuestStatus struct {
	// Heartbeat is the last counter the guest printed on its serial console.
	Heartbeat int64 `json:"heartbeat,omitempty"`
}

// BlockDeviceStatusRef is a block device of the VM: one of spec.blockDeviceRefs, or one
// hot-plugged by a VirtualMachineBlockDeviceAttachment.
type BlockDeviceStatusRef struct {
	// Kind of the block device.
	// +kubebuilder:validation:Enum=ClusterVirtualImage;VirtualImage;VirtualDisk
	Kind string `json:"kind"`
	// Name of the block device.
	Name string `json:"name"`
	// Size is what the guest sees: a disk's capacity, an image's unpacked size.
	Size string `json:"size"`
	// Target is the device's name in QEMU: disk<N> for spec.blockDeviceRefs in their
	// order, hotplug-<slot> for a hot-plugged disk (also its serial number in the guest:
	// /dev/disk/by-id/virtio-hotplug-<slot> on Linux).
	// +optional
	Target string `json:"target,omitempty"`
	// Attached is true while the VM's QEMU has the device.
	Attached bool `json:"attached"`
	// Hotplugged is true for a device of a VirtualMachineBlockDeviceAttachment.
	// +optional
	Hotplugged bool `json:"hotplugged,omitempty"`
	// VirtualMachineBlockDeviceAttachmentName names the attachment of a hot-plugged device.
	// +optional
	VirtualMachineBlockDeviceAttachmentName string `json:"virtualMachineBlockDeviceAttachmentName,omitempty"`
	// BootOrder is the device's place in the boot order (1 boots first); hot-plugged
	// devices are not in it.
	// +optional
	BootOrder int `json:"bootOrder,omitempty"`
}

// VirtualMachineStatus is the observed VM.
type VirtualMachineStatus struct {
	// +optional
	Phase MachinePhase `json:"phase,omitempty"`
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// +optional
	IPAddress string `json:"ipAddress,omitempty"`
	// VirtualMachineIPAddressName is the VirtualMachineIPAddress whose address the VM has.
	// +optional
	VirtualMachineIPAddressName string `json:"virtualMachineIPAddressName,omitempty"`
	// Networks are the VM's interfaces as given to it: the main one's MAC address and the
	// VirtualMachineMACAddress that holds it.
	// +optional
	Networks []NetworksStatus `json:"networks,omitempty"`
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	MigrationState *MigrationState `json:"migrationState,omitempty"`
	// GuestOSInfo is the guest's operating system, from the QEMU guest agent (empty while
	// no agent answers).
	// +optional
	GuestOSInfo *GuestOSInfo `json:"guestOSInfo,omitempty"`
	// Interfaces are the guest's network interfaces with the addresses its agent reports.
	// +optional
	Interfaces []GuestInterface `json:"interfaces,omitempty"`
	// +optional
	VirtualMachinePods []VirtualMachinePod `json:"virtualMachinePods,omitempty"`
	// Stats are the VM's phase history and how long its last start took.
	// +optional
	Stats *VirtualMachineStats `json:"stats,omitempty"`
	// Resources are what the running VM was given: cores, their guaranteed share, memory,
	// and what its launcher pod requests on top for QEMU.
	// +optional
	Resources *VirtualMachineResources `json:"resources,omitempty"`
	// RestartAwaitingChanges lists the changes of the spec that the running VM takes only
	// at its next restart, each as {operation, path, currentValue, desiredValue}.
	// +optional
	RestartAwaitingChanges []runtime.RawExtension `json:"restartAwaitingChanges,omitempty"`
	// BlockDeviceRefs are the VM's block devices: those of spec.blockDeviceRefs, then the
	// hot-plugged ones.
	// +optional
	BlockDeviceRefs []BlockDeviceStatusRef `json:"blockDeviceRefs,omitempty"`
	// USBDevices is the state of spec.usbDevices: none attached in Ferry.
	// +optional
	USBDevices []USBDeviceStatusRef `json:"usbDevices,omitempty"`
	// RestartCount counts starts after a crash since the VM last ran well; it paces restarts.
	// +optional
	RestartCount int32 `json:"restartCount,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachineStats are a VM's phase history and launch durations, as Deckhouse's.
type VirtualMachineStats struct {
	// PhasesTransitions are the VM's last phase changes, oldest first (at most
	// MaxPhaseTransitions).
	// +optional
	PhasesTransitions []VirtualMachinePhaseTransition `json:"phasesTransitions,omitempty"`
	// +optional
	LaunchTimeDuration VirtualMachineLaunchTimeDuration `json:"launchTimeDuration,omitempty"`
	// LastStartTime is when the VM last entered Running after a start (a migration does not
	// restart it).
	// +optional
	LastStartTime *metav1.Time `json:"lastStartTime,omitempty"`
}

// MaxPhaseTransitions bounds status.stats.phasesTransitions.
const MaxPhaseTransitions = 5

// VirtualMachinePhaseTransition is one change of a VM's phase.
type VirtualMachinePhaseTransition struct {
	Phase MachinePhase `json:"phase,omitempty"`
	// +nullable
	Timestamp metav1.Time `json:"timestamp,omitempty"`
}

// VirtualMachineLaunchTimeDuration is how long the last start took, step by step.
type VirtualMachineLaunchTimeDuration struct {
	// WaitingForDependencies: from Pending to Starting (disks, address, provisioning).
	// +nullable
	// +optional
	WaitingForDependencies *metav1.Duration `json:"waitingForDependencies,omitempty"`
	// VirtualMachineStarting: from Starting to Running (the pod placed and QEMU running).
	// +nullable
	// +optional
	VirtualMachineStarting *metav1.Duration `json:"virtualMachineStarting,omitempty"`
	// GuestOSAgentStarting: from Running to the guest agent's first answer.
	// +nullable
	// +optional
	GuestOSAgentStarting *metav1.Duration `json:"guestOSAgentStarting,omitempty"`
}

// VirtualMachineResources are what the running VM was given.
type VirtualMachineResources struct {
	// +optional
	CPU VirtualMachineCPUResources `json:"cpu,omitempty"`
	// +optional
	Memory VirtualMachineMemoryResources `json:"memory,omitempty"`
}

// VirtualMachineCPUResources: the VM's vCPUs and what its pod requests for them.
type VirtualMachineCPUResources struct {
	Cores int `json:"cores"`
	// +optional
	CoreFraction string `json:"coreFraction,omitempty"`
	// RequestedCores is the launcher pod's CPU request: cores × coreFraction.
	// +optional
	RequestedCores resource.Quantity `json:"requestedCores,omitempty"`
	// RuntimeOverhead is CPU the pod requests beyond that for QEMU (none in Ferry).
	// +optional
	RuntimeOverhead resource.Quantity `json:"runtimeOverhead,omitempty"`
	// +optional
	Topology *VirtualMachineCPUTopology `json:"topology,omitempty"`
}

// VirtualMachineCPUTopology is how the vCPUs are laid out.
type VirtualMachineCPUTopology struct {
	CoresPerSocket int `json:"coresPerSocket"`
	Sockets        int `json:"sockets"`
}

// VirtualMachineMemoryResources: the guest's memory and what its pod requests beyond it.
type VirtualMachineMemoryResources struct {
	Size resource.Quantity `json:"size"`
	// RuntimeOverhead is the memory the pod requests beyond the guest's for QEMU.
	// +optional
	RuntimeOverhead resource.Quantity `json:"runtimeOverhead,omitempty"`
}

// VirtualMachine is a virtual machine that Ferry runs on a node of the cluster.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vm;vms,categories=all;virtualization
// Deckhouse's columns; its Uptime shows by default (priority 0), Ferry's only with -o wide,
// so that `kubectl get vm` shows NAME PHASE NODE IPADDRESS AGE.
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`,description="Virtual machine phase."
// +kubebuilder:printcolumn:name="Uptime",type=date,priority=1,JSONPath=`.status.stats.lastStartTime`,description="Time since the virtual machine started running."
// +kubebuilder:printcolumn:name="Cores",type=string,priority=1,JSONPath=`.status.resources.cpu.cores`,description="Real number of the virtual machine cores."
// +kubebuilder:printcolumn:name="CoreFraction",type=string,priority=1,JSONPath=`.status.resources.cpu.coreFraction`,description="Real core fraction."
// +kubebuilder:printcolumn:name="Memory",type=string,priority=1,JSONPath=`.status.resources.memory.size`,description="The real amount of memory of the virtual machine."
// +kubebuilder:printcolumn:name="Need restart",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=='AwaitingRestartToApplyConfiguration')].status`,description="A restart of the virtual machine is required."
// +kubebuilder:printcolumn:name="Agent",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=='AgentReady')].status`,description="Agent status."
// +kubebuilder:printcolumn:name="Migratable",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=='Migratable')].status`,description="Is it possible to migrate a virtual machine."
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`,description="The node where the virtual machine is running."
// +kubebuilder:printcolumn:name="IPAddress",type=string,JSONPath=`.status.ipAddress`,description="The IP address of the virtual machine."
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`,description="Time of resource creation."
type VirtualMachine struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineSpec   `json:"spec"`
	Status VirtualMachineStatus `json:"status,omitempty"`
}

// VirtualMachineList is a list of VirtualMachine.
// +kubebuilder:object:root=true
type VirtualMachineList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachine `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachine{}, &VirtualMachineList{})
}
