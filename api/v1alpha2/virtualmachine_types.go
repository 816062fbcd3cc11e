package v1alpha2

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// CoreFraction is the guaranteed share of each core, as in Deckhouse ("5%" to "100%").
	// +kubebuilder:validation:Pattern=`^([1-9]|[1-9][0-9]|100)%$`
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
// +kubebuilder:validation:Enum=VirtualDisk;ClusterVirtualImage
type BlockDeviceKind string

const (
	DiskDevice         BlockDeviceKind = "VirtualDisk"
	ClusterImageDevice BlockDeviceKind = "ClusterVirtualImage"
)

// BlockDeviceRef attaches a disk or an image to the VM; the first one boots.
type BlockDeviceRef struct {
	Kind BlockDeviceKind `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// VirtualMachineSpec is the desired VM.
type VirtualMachineSpec struct {
	// +kubebuilder:default=AlwaysOnUnlessStoppedManually
	// +optional
	RunPolicy RunPolicy `json:"runPolicy,omitempty"`
	// +kubebuilder:default=PreferSafe
	// +optional
	LiveMigrationPolicy LiveMigrationPolicy `json:"liveMigrationPolicy,omitempty"`
	// +kubebuilder:default=BIOS
	// +kubebuilder:validation:Enum=BIOS
	// +optional
	Bootloader string `json:"bootloader,omitempty"`
	// +optional
	VirtualMachineClassName string     `json:"virtualMachineClassName,omitempty"`
	CPU                     CPUSpec    `json:"cpu"`
	Memory                  MemorySpec `json:"memory"`
	// BlockDeviceRefs are the VM's disks in boot order.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, a.kind == b.kind && a.name == b.name))",message="blockDeviceRefs must not name the same device twice"
	BlockDeviceRefs []BlockDeviceRef `json:"blockDeviceRefs"`
	// VirtualMachineIPAddress asks for a particular address from the VM range; empty takes a free one.
	// +kubebuilder:validation:XValidation:rule="self == '' || isIP(self)",message="virtualMachineIPAddress must be an IPv4 address such as 10.66.10.20"
	// +optional
	VirtualMachineIPAddress string `json:"virtualMachineIPAddress,omitempty"`
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=60
	// +optional
	TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds,omitempty"`
	// +optional
	Provisioning *Provisioning `json:"provisioning,omitempty"`
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

// VirtualMachineStatus is the observed VM.
type VirtualMachineStatus struct {
	// +optional
	Phase MachinePhase `json:"phase,omitempty"`
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// +optional
	IPAddress string `json:"ipAddress,omitempty"`
	// +optional
	VirtualMachineIPAddressLease string `json:"virtualMachineIPAddressLease,omitempty"`
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
	// RestartCount counts starts after a crash since the VM last ran well; it paces restarts.
	// +optional
	RestartCount int32 `json:"restartCount,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachine is a virtual machine that Ferry runs on a node of the cluster.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vm;vms,categories=all;virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="IPAddress",type=string,JSONPath=`.status.ipAddress`
// +kubebuilder:printcolumn:name="Agent",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=='AgentReady')].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
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
