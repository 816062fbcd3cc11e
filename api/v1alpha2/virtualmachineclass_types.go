package v1alpha2

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// VirtualMachineClassKind is the kind's name.
const VirtualMachineClassKind = "VirtualMachineClass"

// GenericClassName is the class Ferry creates at its first start, as Deckhouse does at
// install, and the one a VM without spec.virtualMachineClassName gets while no class is
// the default (AnnotationDefaultClass).
const GenericClassName = "generic"

// AnnotationDefaultClass, set to "true", makes a class the default: a VM created without
// spec.virtualMachineClassName gets its name (Ferry's mutating VM webhook), and with no
// default class GenericClassName. Another value means not default. At most one class
// holds it: the class webhook refuses a second one (column IsDefault shows it).
const AnnotationDefaultClass = "virtualmachineclass.virtualization.deckhouse.io/is-default-class"

// DefaultClassValue is the value of AnnotationDefaultClass that makes a class the default.
const DefaultClassValue = "true"

// VirtualMachineClass resource describes CPU requirements, node placement, and sizing policy for VM resources.
// A resource cannot be deleted as long as it is used in one of the VMs.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories={virtualization-cluster},scope=Cluster,shortName={vmc,vmclass},singular=virtualmachineclass
// +kubebuilder:printcolumn:name="Phase",type="string",JSONPath=".status.phase",description="VirtualMachineClass phase."
// +kubebuilder:printcolumn:name="IsDefault",type="string",JSONPath=".metadata.annotations.virtualmachineclass\\.virtualization\\.deckhouse\\.io\\/is-default-class",description="Default class for virtual machines without specified class."
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp",description="Time of resource creation."
type VirtualMachineClass struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachineClassSpec   `json:"spec"`
	Status VirtualMachineClassStatus `json:"status,omitempty"`
}

// VirtualMachineClassList contains a list of VirtualMachineClasses.
// +kubebuilder:object:root=true
type VirtualMachineClassList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachineClass `json:"items"`
}

// VirtualMachineClassSpec is what a class asks of its VMs; spec.cpu is required.
// +kubebuilder:validation:XValidation:rule="has(self.cpu)",message="spec.cpu is required: the processor of the class's VMs, e.g. cpu: {type: Discovery} (the common features of the nodes), {type: Model, model: Nehalem} or {type: Host}"
type VirtualMachineClassSpec struct {
	// NodeSelector defines the nodes targeted for VM scheduling.
	// +optional
	NodeSelector NodeSelector `json:"nodeSelector,omitempty"`
	// Tolerations are the same as `spec.tolerations` for [pods](https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/).
	// These tolerations will be merged with the tolerations specified in the VirtualMachine resource. VirtualMachine tolerations have a higher priority.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// CPU defines the requirements for the virtual CPU model.
	// +optional
	CPU CPU `json:"cpu"` // required as in Deckhouse, by the rule above: kube-apiserver adds a confusing line on unchecked rules to a refusal for a field of the schema's required list

	// Policies for allocating computational resources to VMs. Up to 16 policies can be
	// defined; their cores ranges must not overlap.
	//
	// The bound also keeps the CEL rules below within the apiserver's cost budget.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.filter(b, a.cores.min <= b.cores.max && b.cores.min <= a.cores.max).size() == 1)",message="the cores ranges [min; max] of the sizing policies overlap: each number of cores may fall in one policy only (e.g. 1-4, then 5-8)"
	// +optional
	SizingPolicies []SizingPolicy `json:"sizingPolicies,omitempty"`
}

// NodeSelector defines the nodes targeted for VM scheduling.
type NodeSelector struct {
	// A map of {key,value} pairs.
	// A single {key,value} pair in the matchLabels map is equivalent to an element of matchExpressions whose key field is "key", operator is "In", and the value array contains only "value".
	// The requirements are ANDed.
	// +optional
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
	// A list of node selector requirements by node's labels.
	// +optional
	MatchExpressions []corev1.NodeSelectorRequirement `json:"matchExpressions,omitempty"`
}

// CPUType defines the CPU type, the following options are supported:
// * `Host`: Uses a virtual CPU with an instruction set closely matching the platform node's CPU.
// This provides high performance and functionality, as well as compatibility with "live" migration for nodes with similar processor types.
// * `HostPassthrough`: Uses the platform node's physical CPU directly, without any modifications.
// Under Ferry both run QEMU's `-cpu host`, which needs KVM: on a node without KVM (TCG) the launcher runs QEMU's `max` model instead and says so in its log.
// * `Discovery`: Create a virtual CPU based on instruction sets of physical CPUs for a selected set of nodes.
// The feature set is fixed when the resource is created and does not change when nodes are added to or removed from the cluster.
// * `Model`: CPU model. A CPU model is a named and previously defined set of supported CPU instructions.
// * `Features`: A required set of supported instructions for the CPU.
//
// +kubebuilder:validation:Enum=Host;HostPassthrough;Discovery;Model;Features
type CPUType string

// The CPU types.
const (
	CPUTypeHost            CPUType = "Host"
	CPUTypeHostPassthrough CPUType = "HostPassthrough"
	CPUTypeDiscovery       CPUType = "Discovery"
	CPUTypeModel           CPUType = "Model"
	CPUTypeFeatures        CPUType = "Features"
)

// CPU defines the requirements for the virtual CPU model.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message=".spec.cpu is immutable: create another class for another CPU"
// +kubebuilder:validation:XValidation:rule="self.type == 'HostPassthrough' || self.type == 'Host' ? !has(self.model) && !has(self.features) && !has(self.discovery) : true",message="HostPassthrough and Host cannot have model, features or discovery: remove them, or choose type Model, Features or Discovery"
// +kubebuilder:validation:XValidation:rule="self.type == 'Discovery' ? !has(self.model) && !has(self.features) : true",message="Discovery cannot have model or features: remove them (discovery.nodeSelector chooses the nodes whose common features make the CPU)"
// +kubebuilder:validation:XValidation:rule="self.type == 'Model' ? has(self.model) && !has(self.features) && !has(self.discovery) : true",message="Model requires model (e.g. model: Nehalem) and cannot have features or discovery"
// +kubebuilder:validation:XValidation:rule="self.type == 'Features' ? has(self.features) && !has(self.model) && !has(self.discovery): true",message="Features requires features (e.g. features: [sse4_2, popcnt]) and cannot have model or discovery"
type CPU struct {
	Type CPUType `json:"type"`
	// CPU model name, as QEMU names it (`qemu-system-x86_64 -cpu help`). For more information about CPU models and topology, refer to the [libvirt docs](https://libvirt.org/formatdomain.html#cpu-model-and-topology).
	//
	// The pattern keeps the name one word of QEMU's -cpu option.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9_.-]*$`
	// +kubebuilder:example=IvyBridge
	// +optional
	Model string `json:"model,omitempty"`
	// List of CPU instructions (features) required when type=Features, as QEMU names them.
	// For more information about CPU features, refer to the [libvirt docs](https://libvirt.org/formatdomain.html#cpu-model-and-topology).
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9][A-Za-z0-9_.-]*$`
	// +kubebuilder:example={mmx, vmx, sse2}
	// +optional
	Features []string `json:"features,omitempty"`
	// Create a CPU model based on intersecting CPU features for selected nodes.
	// +optional
	Discovery *CPUDiscovery `json:"discovery,omitempty"`
}

// CPUDiscovery chooses the nodes whose common CPU features make a Discovery class's CPU.
type CPUDiscovery struct {
	// A selection of nodes to be used as the basis for creating a universal CPU model.
	// +optional
	NodeSelector metav1.LabelSelector `json:"nodeSelector,omitempty"`
}

// SizingPolicy defines a policy for allocating computational resources to VMs.
// It is represented as a list.
// The cores.min - cores.max ranges for different elements of the list must not overlap.
// +kubebuilder:validation:XValidation:rule="!has(self.defaultCoreFraction) || !has(self.coreFractions) || type(self.defaultCoreFraction) != int || self.coreFractions.exists(f, f == self.defaultCoreFraction)",message="defaultCoreFraction must be one of coreFractions"
type SizingPolicy struct {
	// Memory sizing policy.
	// +optional
	Memory *SizingPolicyMemory `json:"memory,omitempty"`
	// Allowed values of the `coreFraction` parameter.
	// +kubebuilder:validation:MaxItems=100
	// +optional
	CoreFractions []CoreFractionValue `json:"coreFractions,omitempty"`
	// A default `coreFraction` for a VirtualMachine that sets none: a percentage from 1 to
	// 100. Deckhouse's `Auto` needs its Vertical VirtualMachine Autoscaler, which Ferry does
	// not have.
	//
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=4
	// +kubebuilder:validation:XValidation:rule="type(self) == int && self >= 1 && self <= 100",message="defaultCoreFraction must be a number from 1 to 100 ('Auto' needs Deckhouse's Vertical VirtualMachine Autoscaler, which Ferry does not have)"
	// +kubebuilder:example=50
	// +optional
	DefaultCoreFraction *intstr.IntOrString `json:"defaultCoreFraction,omitempty"`
	// Allowed values of the `dedicatedCores` parameter.
	// +kubebuilder:validation:MaxItems=2
	// +optional
	DedicatedCores []bool `json:"dedicatedCores,omitempty"`
	// The policy applies for a specified range of the number of CPU cores.
	Cores *SizingPolicyCores `json:"cores"`
}

// CoreFractionValue is a percentage of a CPU core.
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=100
type CoreFractionValue int

// SizingPolicyMemory is a memory sizing policy.
type SizingPolicyMemory struct {
	MemoryMinMax `json:",inline"`
	// Memory size discretization step. For example, the combination of `min=2Gi, `max=4Gi` and `step=1Gi` allows to set the virtual machine memory size to 2Gi, 3Gi, or 4Gi.
	//
	// +kubebuilder:example="512Mi"
	// +optional
	Step *resource.Quantity `json:"step,omitempty"`
	// Amount of memory per CPU core.
	// +optional
	PerCore *SizingPolicyMemoryPerCore `json:"perCore,omitempty"`
}

// SizingPolicyMemoryPerCore is the memory per CPU core.
type SizingPolicyMemoryPerCore struct {
	MemoryMinMax `json:",inline"`
}

// MemoryMinMax is a range of memory sizes.
type MemoryMinMax struct {
	// Minimum amount of memory.
	// +kubebuilder:example="1Gi"
	// +optional
	Min *resource.Quantity `json:"min,omitempty"`
	// Maximum amount of memory.
	// +kubebuilder:example="8Gi"
	// +optional
	Max *resource.Quantity `json:"max,omitempty"`
}

// SizingPolicyCores is the range of cores a policy applies to.
// +kubebuilder:validation:XValidation:rule="self.max > self.min",message="The maximum must be greater than the minimum"
// +kubebuilder:validation:XValidation:rule="has(self.step) ? self.max > self.step : true",message="The maximum must be greater than the step"
type SizingPolicyCores struct {
	// Minimum number of CPU cores.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:example=1
	Min int `json:"min"`
	// Maximum number of CPU cores.
	// +kubebuilder:validation:Maximum=1024
	// +kubebuilder:example=10
	Max int `json:"max"`
	// Discretization step for the CPU core number. For example, the combination of `min=2`, `max=10`, and `step=4` allows to set the number of virtual machine CPU cores to 2, 6, or 10.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:example=1
	// +optional
	Step int `json:"step,omitempty"`
}

// VirtualMachineClassPhase defines the current resource status:
// * `Pending`: The resource is not ready and waits until the suitable nodes supporting the required CPU model are available.
// * `Ready`: The resource is ready and available for use.
// * `Terminating`: The resource is terminating.
//
// +kubebuilder:validation:Enum=Pending;Ready;Terminating
type VirtualMachineClassPhase string

// The class phases.
const (
	ClassPhasePending     VirtualMachineClassPhase = "Pending"
	ClassPhaseReady       VirtualMachineClassPhase = "Ready"
	ClassPhaseTerminating VirtualMachineClassPhase = "Terminating"
)

// VirtualMachineClassStatus is the observed class.
type VirtualMachineClassStatus struct {
	Phase VirtualMachineClassPhase `json:"phase"`
	// +optional
	CPUFeatures CPUFeatures `json:"cpuFeatures,omitempty"`
	// List of nodes that support this CPU model.
	// It is not displayed for the following types: `Host`, `HostPassthrough`.
	//
	// +kubebuilder:example={node-1, node-2}
	// +optional
	AvailableNodes []string `json:"availableNodes,omitempty"`
	// Maximum amount of free CPU and memory resources observed among all available nodes.
	// +optional
	MaxAllocatableResources corev1.ResourceList `json:"maxAllocatableResources,omitempty"`
	// The latest detailed observations of the VirtualMachineClass resource.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Resource generation last processed by the controller.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// CPUFeatures is information on the CPU features of this class's model.
// Shown only for `Features` or `Discovery` types.
type CPUFeatures struct {
	// List of CPU features for this model.
	// +kubebuilder:example={mmx, vmx, sse2}
	// +optional
	Enabled []string `json:"enabled,omitempty"`
	// List of unused processor features additionally available for a given group of nodes.
	// +kubebuilder:example={ssse3, vme}
	// +optional
	NotEnabledCommon []string `json:"notEnabledCommon,omitempty"`
}

// Condition types and reasons of a VirtualMachineClass, as Deckhouse names them.
const (
	// ClassConditionReady: nodes exist that can run the class's VMs.
	ClassConditionReady = "Ready"
	// ClassConditionDiscovered: a Discovery class's CPU features were found.
	ClassConditionDiscovered = "Discovered"
	// ClassConditionInUse: VMs use the class (it is kept while they do).
	ClassConditionInUse = "InUse"

	ReasonNoCPUFeaturesEnabled = "NoCpuFeaturesEnabled"
	ReasonNoSuitableNodesFound = "NoSuitableNodesFound"
	ReasonSuitableNodesFound   = "SuitableNodesFound"
	ReasonDiscoverySucceeded   = "DiscoverySucceeded"
	ReasonDiscoverySkip        = "DiscoverySkip"
	ReasonDiscoveryFailed      = "DiscoveryFailed"
	ReasonVMClassInUse         = "VirtualMachineClassInUse"
	ReasonVMClassNotInUse      = "VirtualMachineClassNotInUse"
)

// A VirtualMachine's class conditions and reasons, as Deckhouse names them.
const (
	// VMConditionClassReady: the VM's class exists and is Ready; a VM waits for it to start.
	VMConditionClassReady = "VirtualMachineClassReady"
	ReasonClassReady      = "VirtualMachineClassReady"
	ReasonClassNotReady   = "VirtualMachineClassNotReady"

	// VMConditionSizingPolicyMatched is False (and only then present) while the VM's cores,
	// memory or coreFraction is outside its class's sizing policies, e.g. after the class
	// changed.
	VMConditionSizingPolicyMatched = "SizingPolicyMatched"
	ReasonSizingPolicyNotMatched   = "SizingPolicyNotMatched"
	ReasonClassTerminating         = "VirtualMachineClassTerminating"
	ReasonClassNotFound            = "VirtualMachineClassNotFound"
)

// FinalizerVMClass keeps a class while VMs use it.
const FinalizerVMClass = "virtualization.ferryvm.io/vmclass"

// Node labels through which a node tells the CPU models and features it can run, with
// Deckhouse's names. Ferry's agent sets them on its Node (<prefix><name>=true) from what the
// node's QEMU offers a guest under its accelerator, in QEMU's spelling of -cpu help
// (sse4.2, lahf-lm); a class is available only on the nodes that have its model or features.
const (
	LabelCPUModelPrefix   = "cpu-model.node.virtualization.deckhouse.io/"
	LabelCPUFeaturePrefix = "cpu-feature.node.virtualization.deckhouse.io/"
)

func init() {
	SchemeBuilder.Register(&VirtualMachineClass{}, &VirtualMachineClassList{})
}
