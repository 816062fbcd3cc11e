package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations of a VirtualMachinePool's replicas and disks (Deckhouse's keys).
const (
	// LabelPool names the pool of a replica or of a pool disk; people list replicas with it.
	LabelPool = "vmpool.virtualization.deckhouse.io/pool"
	// LabelPoolUID is the pool's UID on its replicas: status.selector selects by it, so a
	// VM made by hand with the pool's name label is never counted as a replica.
	LabelPoolUID = "vmpool.virtualization.deckhouse.io/pool-uid"
	// LabelPoolTemplateHash is the hash of the virtualMachineTemplate a replica was made from.
	LabelPoolTemplateHash = "vmpool.virtualization.deckhouse.io/template-hash"
	// LabelPoolDiskTemplate names the virtualDiskTemplates entry a pool disk was made from.
	LabelPoolDiskTemplate = "vmpool.virtualization.deckhouse.io/disk-template"
	// AnnotationPoolDiskFreeSince (RFC 3339) is when a Retain disk stopped being used by
	// any replica; its ttl counts from then.
	AnnotationPoolDiskFreeSince = "vmpool.virtualization.deckhouse.io/free-since"
)

// ScaleDownPolicy says which replicas go when a pool is scaled down.
// +kubebuilder:validation:Enum=NewestFirst;OldestFirst;Explicit
type ScaleDownPolicy string

const (
	// ScaleDownNewestFirst removes the youngest replicas first.
	ScaleDownNewestFirst ScaleDownPolicy = "NewestFirst"
	// ScaleDownOldestFirst removes the oldest replicas first.
	ScaleDownOldestFirst ScaleDownPolicy = "OldestFirst"
	// ScaleDownExplicit refuses a scale-down through spec.replicas or the scale
	// subresource. Deckhouse removes such replicas by name through its scaleDownWith
	// subresource (an aggregated API), which Ferry does not serve.
	ScaleDownExplicit ScaleDownPolicy = "Explicit"
)

// DiskReclaimPolicy says what becomes of a replica's disk when the replica goes.
// +kubebuilder:validation:Enum=Delete;Retain
type DiskReclaimPolicy string

const (
	// ReclaimDelete: the disk belongs to its replica and goes with it.
	ReclaimDelete DiskReclaimPolicy = "Delete"
	// ReclaimRetain: the disk belongs to the pool, stays free after its replica goes and
	// is given to a later replica.
	ReclaimRetain DiskReclaimPolicy = "Retain"
)

// DiskReclaim is the reclaim policy of a pool's disk template.
// +kubebuilder:validation:XValidation:rule="self.onScaleDown == 'Retain' || (self.keep == 0 && !has(self.ttl))",message="keep and ttl are only valid with onScaleDown: Retain"
// +kubebuilder:validation:XValidation:rule="self.keep == 0 || has(self.ttl)",message="keep requires ttl: without ttl free disks are never collected, so keep would do nothing"
type DiskReclaim struct {
	// +kubebuilder:default=Delete
	// +optional
	OnScaleDown DiskReclaimPolicy `json:"onScaleDown,omitempty"`
	// Keep is how many of the most recently freed Retain disks stay whatever their age.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=0
	// +optional
	Keep int32 `json:"keep"`
	// TTL is how long a free Retain disk beyond keep stays before it is deleted (a Go
	// duration such as 30m); without it free disks stay for good.
	// +optional
	TTL *metav1.Duration `json:"ttl,omitempty"`
}

// VirtualDiskTemplateSpec is the spec of the disks made from a disk template: a
// VirtualDisk's spec, whose dataSource may change here (it applies to disks made later).
// +kubebuilder:validation:XValidation:rule="has(self.dataSource) || (has(self.persistentVolumeClaim) && has(self.persistentVolumeClaim.size))",message="a disk without dataSource needs persistentVolumeClaim.size"
// +kubebuilder:validation:XValidation:rule="!has(self.dataSource) || self.dataSource.type != 'ObjectRef' || !has(self.dataSource.objectRef) || self.dataSource.objectRef.kind != 'VirtualDisk'",message="a VirtualDisk is made from a ClusterVirtualImage, a VirtualImage or a VirtualDiskSnapshot, not from another VirtualDisk"
// +kubebuilder:validation:XValidation:rule="!has(self.dataSource) || !has(self.dataSource.objectRef) || !has(self.dataSource.objectRef.namespace)",message="a disk template's objectRef names an image or a snapshot in the pool's namespace, or a ClusterVirtualImage: leave out objectRef.namespace"
type VirtualDiskTemplateSpec struct {
	// +optional
	DataSource *DataSource `json:"dataSource,omitempty"`
	// +optional
	PersistentVolumeClaim DiskClaim `json:"persistentVolumeClaim,omitempty"`
}

// VirtualDiskTemplate is one disk every replica gets.
type VirtualDiskTemplate struct {
	// Name of the template, part of its disks' names; the template's blockDeviceRefs
	// name it (kind VirtualDisk).
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// +optional
	Reclaim DiskReclaim             `json:"reclaim,omitempty"`
	Spec    VirtualDiskTemplateSpec `json:"spec"`
}

// VirtualMachineTemplateMetadata is the labels and annotations every replica gets; the
// pool's own labels go on top.
type VirtualMachineTemplateMetadata struct {
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// VirtualMachineTemplate is what every replica is made from.
type VirtualMachineTemplate struct {
	// +optional
	Metadata VirtualMachineTemplateMetadata `json:"metadata,omitempty"`
	// Spec is a VM's spec; its VirtualDisk refs name virtualDiskTemplates entries, which
	// the controller turns into each replica's own disks.
	Spec VirtualMachineSpec `json:"spec"`
}

// VirtualMachinePoolSpec is the desired pool.
// +kubebuilder:validation:XValidation:rule="self.virtualDiskTemplates.all(t, self.virtualMachineTemplate.spec.blockDeviceRefs.exists(r, r.kind == 'VirtualDisk' && r.name == t.name))",message="each virtualDiskTemplates entry must be referenced by a VirtualDisk entry in virtualMachineTemplate.spec.blockDeviceRefs: add {kind: VirtualDisk, name: <template name>} there or remove the template"
// +kubebuilder:validation:XValidation:rule="self.virtualMachineTemplate.spec.blockDeviceRefs.filter(r, r.kind == 'VirtualDisk').all(r, self.virtualDiskTemplates.exists(t, t.name == r.name))",message="each VirtualDisk reference in virtualMachineTemplate.spec.blockDeviceRefs must name a virtualDiskTemplates entry: a replica's disks are made from the templates, so add a template of that name or reference the disk's template"
// +kubebuilder:validation:XValidation:rule="self.virtualMachineTemplate.spec.blockDeviceRefs.filter(r, r.kind == 'VirtualDisk').size() == self.virtualDiskTemplates.size()",message="each virtualDiskTemplates entry must be referenced exactly once (no duplicate VirtualDisk references in virtualMachineTemplate.spec.blockDeviceRefs)"
// +kubebuilder:validation:XValidation:rule="!has(self.virtualMachineTemplate.spec.virtualMachineIPAddressName) && !has(self.virtualMachineTemplate.spec.virtualMachineIPAddress)",message="virtualMachineTemplate.spec cannot set virtualMachineIPAddressName or virtualMachineIPAddress: every replica gets an address of its own; leave them out"
// +kubebuilder:validation:XValidation:rule="!has(self.virtualMachineTemplate.spec.osType) || self.virtualMachineTemplate.spec.osType != 'Legacy'",message="The Legacy osType is not supported in a VirtualMachinePool: replicas are told apart by provisioning, which Legacy systems lack; create such VMs one by one"
// +kubebuilder:validation:XValidation:rule="(has(self.replicas) ? self.replicas : 0) >= (has(oldSelf.replicas) ? oldSelf.replicas : 0) || (oldSelf.scaleDownPolicy != 'Explicit' && self.scaleDownPolicy != 'Explicit')",message="scaleDownPolicy Explicit refuses a scale-down through spec.replicas or the scale subresource (Ferry has no scaleDownWith subresource to remove replicas by name): set scaleDownPolicy to NewestFirst or OldestFirst first, then lower replicas"
type VirtualMachinePoolSpec struct {
	// Replicas is how many VMs the pool keeps (unset: none). Written by people or an
	// autoscaler, through the scale subresource or the spec; never by the controller.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// ScaleDownPolicy picks the replicas a scale-down removes.
	ScaleDownPolicy ScaleDownPolicy `json:"scaleDownPolicy"`
	// VirtualDiskTemplates are the disks every replica gets, by template name.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, self.exists_one(b, b.name == a.name))",message="virtualDiskTemplates names must be unique: rename or remove the duplicate template"
	// +listType=map
	// +listMapKey=name
	VirtualDiskTemplates []VirtualDiskTemplate `json:"virtualDiskTemplates"`
	// VirtualMachineTemplate is what every replica is made from.
	VirtualMachineTemplate VirtualMachineTemplate `json:"virtualMachineTemplate"`
}

// Condition types and reasons of a VirtualMachinePool (Deckhouse's names).
const (
	// PoolConditionAvailable: whether every wanted replica is ready.
	PoolConditionAvailable = "Available"
	// PoolConditionProgressing: present while the number of replicas converges.
	PoolConditionProgressing = "Progressing"
	// PoolConditionSynced: whether every replica is on the current virtualMachineTemplate.
	PoolConditionSynced = "Synced"

	ReasonPoolAllReplicasReady          = "AllReplicasReady"
	ReasonPoolInsufficientReadyReplicas = "InsufficientReadyReplicas"
	ReasonPoolReplicasProgressing       = "ReplicasProgressing"
	ReasonPoolSynced                    = "PoolSynced"
	// ReasonPoolRolloutInProgress: some replicas are on an older template; Ferry does
	// not roll them: they take the new template when they are made again.
	ReasonPoolRolloutInProgress = "RolloutInProgress"
)

// VirtualMachinePoolStatus is the observed pool.
type VirtualMachinePoolStatus struct {
	// Replicas is the number of replicas that exist, Terminating ones included.
	// +optional
	Replicas int32 `json:"replicas"`
	// ReadyReplicas is the number of replicas Running and not Terminating.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`
	// UpdatedReplicas is the number of replicas made from the current template.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas"`
	// DesiredTemplateHash is the hash of the current virtualMachineTemplate.
	// +optional
	DesiredTemplateHash string `json:"desiredTemplateHash,omitempty"`
	// Selector selects the pool's replicas, for the scale subresource (HPA).
	// +optional
	Selector string `json:"selector,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ObservedGeneration is the generation the status was last written for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualMachinePool keeps spec.replicas VMs made from one template, with their disks.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=vmpool;vmpools,categories=virtualization
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`,description="Current number of pool members (including Terminating)."
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`,description="Number of members ready to serve."
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualMachinePool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualMachinePoolSpec   `json:"spec"`
	Status VirtualMachinePoolStatus `json:"status,omitempty"`
}

// VirtualMachinePoolList is a list of VirtualMachinePool.
// +kubebuilder:object:root=true
type VirtualMachinePoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualMachinePool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VirtualMachinePool{}, &VirtualMachinePoolList{})
}
