package v1alpha2

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImagePhase is the phase of an image or disk.
type ImagePhase string

const (
	ImagePending      ImagePhase = "Pending"
	ImageProvisioning ImagePhase = "Provisioning"
	ImageReady        ImagePhase = "Ready"
	ImageFailed       ImagePhase = "Failed"
	ImageTerminating  ImagePhase = "Terminating"
)

// DataSourceType is where an image's bytes come from.
// +kubebuilder:validation:Enum=HTTP;ObjectRef
type DataSourceType string

const (
	// SourceHTTP downloads from an http://, https:// or file:// URL.
	SourceHTTP DataSourceType = "HTTP"
	// SourceObjectRef copies another image.
	SourceObjectRef DataSourceType = "ObjectRef"
)

// HTTPSource is a URL to fetch an image from.
type HTTPSource struct {
	// URL of a qcow2, raw or ISO image (vdi and vhdx are converted to qcow2): http://, https:// or file:// (a path that the controller can read).
	// +kubebuilder:validation:Pattern=`^(https?|file)://.+`
	URL string `json:"url"`
	// CABundle is a PEM CA chain (base64 in YAML, as any bytes field) that an https URL's
	// certificate may chain to, besides the system's CAs.
	// +optional
	CABundle []byte `json:"caBundle,omitempty"`
	// Checksum the downloaded file must match (every sum given).
	// +optional
	Checksum *Checksum `json:"checksum,omitempty"`
}

// Checksum holds hex digests of a file; the file must match all of those given.
type Checksum struct {
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{32}$`
	MD5 string `json:"md5,omitempty"`
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{40}$`
	SHA1 string `json:"sha1,omitempty"`
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{64}$`
	SHA256 string `json:"sha256,omitempty"`
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{128}$`
	SHA512 string `json:"sha512,omitempty"`
}

// ObjectRefSource names an image to copy from.
type ObjectRefSource struct {
	// +kubebuilder:validation:Enum=ClusterVirtualImage
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// DataSource is where an image or a disk gets its first bytes.
// +kubebuilder:validation:XValidation:rule="self.type != 'HTTP' || has(self.http)",message="dataSource.http is required when type is HTTP"
// +kubebuilder:validation:XValidation:rule="self.type != 'ObjectRef' || has(self.objectRef)",message="dataSource.objectRef is required when type is ObjectRef"
type DataSource struct {
	Type DataSourceType `json:"type"`
	// +optional
	HTTP *HTTPSource `json:"http,omitempty"`
	// +optional
	ObjectRef *ObjectRefSource `json:"objectRef,omitempty"`
}

// ImageSize is the size of an image as stored and as seen by a guest.
type ImageSize struct {
	Stored string `json:"stored,omitempty"`
	// +optional
	StoredBytes string `json:"storedBytes,omitempty"`
	Unpacked    string `json:"unpacked,omitempty"`
	// +optional
	UnpackedBytes string `json:"unpackedBytes,omitempty"`
}

// DownloadSpeed is how fast an image is being downloaded.
type DownloadSpeed struct {
	Avg string `json:"avg,omitempty"`
	// AvgBytes is the average in bytes per second.
	AvgBytes string `json:"avgBytes,omitempty"`
	Current  string `json:"current,omitempty"`
	// CurrentBytes is the current speed in bytes per second.
	CurrentBytes string `json:"currentBytes,omitempty"`
}

// ImportRetry records failed downloads of an image that the controller tries again
// (a Ferry field: Deckhouse's importer pod restarts instead).
type ImportRetry struct {
	// Attempts is how many downloads failed so far.
	Attempts int32 `json:"attempts"`
	// LastError is why the last one failed.
	LastError string `json:"lastError,omitempty"`
	// NextAttemptTime is when the next download starts (back-off: 10 s, doubling, at most 5 min).
	NextAttemptTime metav1.Time `json:"nextAttemptTime,omitempty"`
}

// ClusterVirtualImageSpec is the desired image.
type ClusterVirtualImageSpec struct {
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="dataSource is immutable"
	DataSource DataSource `json:"dataSource"`
}

// ClusterVirtualImageStatus is the observed image.
type ClusterVirtualImageStatus struct {
	Phase ImagePhase `json:"phase,omitempty"`
	// Format is qcow2, raw or iso.
	Format string `json:"format,omitempty"`
	// CDROM is true for an image a VM sees as a CD-ROM (an ISO).
	// +optional
	CDROM bool      `json:"cdrom,omitempty"`
	Size  ImageSize `json:"size,omitempty"`
	// Progress of the download, e.g. "45%" (100% once Ready).
	// +optional
	Progress string `json:"progress,omitempty"`
	// DownloadSpeed while Provisioning from an http(s) URL.
	// +optional
	DownloadSpeed *DownloadSpeed `json:"downloadSpeed,omitempty"`
	// ImportRetry is set while a failed download waits to be tried again.
	// +optional
	ImportRetry *ImportRetry `json:"importRetry,omitempty"`
	// Path is where the image is kept on the shared storage.
	Path       string             `json:"path,omitempty"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// ClusterVirtualImage is a boot image that disks in any namespace can be created from.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cvi;cvis,categories=all;virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="CDROM",type=boolean,JSONPath=`.status.cdrom`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`
// +kubebuilder:printcolumn:name="Format",type=string,JSONPath=`.status.format`
// +kubebuilder:printcolumn:name="Size",type=string,JSONPath=`.status.size.unpacked`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterVirtualImage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterVirtualImageSpec   `json:"spec"`
	Status ClusterVirtualImageStatus `json:"status,omitempty"`
}

// ClusterVirtualImageList is a list of ClusterVirtualImage.
// +kubebuilder:object:root=true
type ClusterVirtualImageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterVirtualImage `json:"items"`
}

// DiskClaim sizes a disk.
type DiskClaim struct {
	// Size of the disk; an image-based disk grows to it when larger than the image.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
	// +optional
	StorageClassName string `json:"storageClassName,omitempty"`
}

// VirtualDiskSpec is the desired disk.
// +kubebuilder:validation:XValidation:rule="has(self.dataSource) || (has(self.persistentVolumeClaim) && has(self.persistentVolumeClaim.size))",message="a disk without dataSource needs persistentVolumeClaim.size"
type VirtualDiskSpec struct {
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="dataSource is immutable"
	DataSource *DataSource `json:"dataSource,omitempty"`
	// +optional
	PersistentVolumeClaim DiskClaim `json:"persistentVolumeClaim,omitempty"`
}

// AttachedVirtualMachine is a VM that uses the disk.
type AttachedVirtualMachine struct {
	Name string `json:"name"`
}

// VirtualDiskStatus is the observed disk.
type VirtualDiskStatus struct {
	Phase    ImagePhase `json:"phase,omitempty"`
	Capacity string     `json:"capacity,omitempty"`
	// Path is the disk's file on the shared storage.
	Path string `json:"path,omitempty"`
	// AttachedToVirtualMachines is the VM that holds the disk; one at a time.
	AttachedToVirtualMachines []AttachedVirtualMachine `json:"attachedToVirtualMachines,omitempty"`
	Conditions                []metav1.Condition       `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// VirtualDisk is a VM's disk on storage that every node reaches.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vd;vds,categories=all;virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Capacity",type=string,JSONPath=`.status.capacity`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualDisk struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualDiskSpec   `json:"spec"`
	Status VirtualDiskStatus `json:"status,omitempty"`
}

// VirtualDiskList is a list of VirtualDisk.
// +kubebuilder:object:root=true
type VirtualDiskList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualDisk `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ClusterVirtualImage{}, &ClusterVirtualImageList{}, &VirtualDisk{}, &VirtualDiskList{})
}
