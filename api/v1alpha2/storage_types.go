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
	// ImageWaitForUserUpload: the object's dataSource is Upload and no upload arrived
	// yet; status.imageUploadURLs says where to send it.
	ImageWaitForUserUpload ImagePhase = "WaitForUserUpload"
	ImageReady             ImagePhase = "Ready"
	ImageFailed            ImagePhase = "Failed"
	ImageTerminating       ImagePhase = "Terminating"
)

// DataSourceType is where an image's bytes come from.
// +kubebuilder:validation:Enum=HTTP;ObjectRef;ContainerImage;Upload
type DataSourceType string

const (
	// SourceHTTP downloads from an http://, https:// or file:// URL.
	SourceHTTP DataSourceType = "HTTP"
	// SourceObjectRef copies another image or a disk.
	SourceObjectRef DataSourceType = "ObjectRef"
	// SourceContainerImage pulls the disk file of a container image (see ContainerImageSource).
	SourceContainerImage DataSourceType = "ContainerImage"
	// SourceUpload waits for the user to send the image's bytes to the controller's
	// upload endpoint (status.imageUploadURLs).
	SourceUpload DataSourceType = "Upload"
)

// HTTPSource is a URL to fetch an image from.
type HTTPSource struct {
	// URL of a qcow2, raw or ISO image (vdi and vhdx are converted to qcow2): http://, https:// or file:// (a file in a directory that the controller's --image-source-dirs lists; none by default).
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
	// Streebog256 (GOST R 34.11-2012, 256 bits) is accepted as Deckhouse does, but Ferry
	// has no Streebog implementation to check it with: the object's Ready condition says
	// that it was not checked.
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{64}$`
	Streebog256 string `json:"streebog256,omitempty"`
	// Streebog512 (GOST R 34.11-2012, 512 bits): accepted, not checked (see streebog256).
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{128}$`
	Streebog512 string `json:"streebog512,omitempty"`
}

// The kinds an objectRef may name.
const (
	ClusterVirtualImageKind = "ClusterVirtualImage"
	VirtualImageKind        = "VirtualImage"
	VirtualDiskKind         = "VirtualDisk"
)

// ObjectRefSource names an image, a disk or a disk snapshot to copy from. Which kinds each
// object takes is its own spec's rule, as in Deckhouse: a ClusterVirtualImage or a
// VirtualImage is made from any of them, a VirtualDisk from an image or a snapshot.
type ObjectRefSource struct {
	// +kubebuilder:validation:Enum=ClusterVirtualImage;VirtualImage;VirtualDisk;VirtualDiskSnapshot
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace of the VirtualImage, VirtualDisk or VirtualDiskSnapshot a
	// ClusterVirtualImage is made from (required there); a VirtualImage and a VirtualDisk
	// name objects of their own namespace and leave it out.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`
}

// UploadSource is an image the user sends to the controller's upload endpoint.
type UploadSource struct {
	// Checksum the uploaded bytes must match (every sum given), as they are sent, before
	// any conversion.
	// +optional
	Checksum *Checksum `json:"checksum,omitempty"`
}

// ContainerImageSource is a container image that holds a disk, as KubeVirt's
// containerDisk does: its layers hold one file under /disk/ (qcow2, raw or ISO), e.g. an
// image built FROM scratch with `COPY disk.img /disk/`.
type ContainerImageSource struct {
	// Image is the image's reference, registry.example.com/images/slackware:15 or
	// …@sha256:<digest>. The registry is reached over TLS, except one on a loopback address
	// (127.0.0.0/8, ::1, localhost) without caBundle, which is plain HTTP: the registry of
	// `ferry up`.
	// +kubebuilder:validation:Pattern=`^(?P<name>(?:(?P<domain>(?:(?:localhost|[\w-]+(?:\.[\w-]+)+)(?::\d+)?)|[\w]+:\d+)/)?(?P<image>[a-z0-9_.-]+(?:/[a-z0-9_.-]+)*))(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[+.-_][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$`
	Image string `json:"image"`
	// ImagePullSecret is a Secret of type kubernetes.io/dockerconfigjson (or
	// kubernetes.io/dockercfg) with the registry's credentials, sent only to the registry
	// the Secret names them for.
	// +optional
	ImagePullSecret *ImagePullSecretName `json:"imagePullSecret,omitempty"`
	// CABundle is a PEM CA chain (base64 in YAML) that the registry's certificate may chain
	// to, besides the system's CAs.
	// +optional
	CABundle []byte `json:"caBundle,omitempty"`
}

// ImagePullSecretName names the Secret with a registry's credentials.
type ImagePullSecretName struct {
	// Name of the Secret.
	// +optional
	Name string `json:"name,omitempty"`
	// Namespace of the Secret: required for a ClusterVirtualImage; a namespaced image or
	// disk reads only a Secret of its own namespace.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// DataSource is where an image or a disk gets its first bytes.
// +kubebuilder:validation:XValidation:rule="self.type == 'HTTP' ? has(self.http) && !has(self.objectRef) && !has(self.upload) : true",message="dataSource.http is required when type is HTTP, and objectRef and upload are not allowed with it"
// +kubebuilder:validation:XValidation:rule="self.type == 'ObjectRef' ? has(self.objectRef) && !has(self.http) && !has(self.upload) : true",message="dataSource.objectRef is required when type is ObjectRef, and http and upload are not allowed with it"
// +kubebuilder:validation:XValidation:rule="self.type == 'Upload' ? !has(self.http) && !has(self.objectRef) : true",message="dataSource.http and objectRef are not allowed when type is Upload"
// +kubebuilder:validation:XValidation:rule="self.type == 'ContainerImage' ? has(self.containerImage) && !has(self.http) && !has(self.objectRef) && !has(self.upload) : !has(self.containerImage)",message="ContainerImage requires containerImage and cannot have http, objectRef or upload; only type ContainerImage has containerImage"
type DataSource struct {
	Type DataSourceType `json:"type"`
	// +optional
	HTTP *HTTPSource `json:"http,omitempty"`
	// +optional
	ObjectRef *ObjectRefSource `json:"objectRef,omitempty"`
	// +optional
	ContainerImage *ContainerImageSource `json:"containerImage,omitempty"`
	// +optional
	Upload *UploadSource `json:"upload,omitempty"`
}

// Checksum is the checksum the source's bytes must match, if any.
func (ds *DataSource) Checksum() *Checksum {
	switch {
	case ds == nil:
		return nil
	case ds.Type == SourceHTTP && ds.HTTP != nil:
		return ds.HTTP.Checksum
	case ds.Type == SourceUpload && ds.Upload != nil:
		return ds.Upload.Checksum
	}
	return nil
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
// +kubebuilder:validation:XValidation:rule="self.dataSource.type != 'ObjectRef' || !has(self.dataSource.objectRef) || self.dataSource.objectRef.kind == 'ClusterVirtualImage' || (has(self.dataSource.objectRef.namespace) && size(self.dataSource.objectRef.namespace) > 0)",message="The namespace is required for VirtualDisk and VirtualImage"
type ClusterVirtualImageSpec struct {
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="dataSource is immutable"
	DataSource DataSource `json:"dataSource"`
}

// ClusterVirtualImageStatus is the observed image.
type ClusterVirtualImageStatus struct {
	ImageStatus `json:",inline"`
}

// ClusterVirtualImage is a boot image that disks in any namespace can be created from.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cvi,categories=all;virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="CDROM",type=boolean,JSONPath=`.status.cdrom`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`
// +kubebuilder:printcolumn:name="StoredSize",type=string,JSONPath=`.status.size.stored`,priority=1
// +kubebuilder:printcolumn:name="UnpackedSize",type=string,JSONPath=`.status.size.unpacked`,priority=1
// +kubebuilder:printcolumn:name="Registry URL",type=string,JSONPath=`.status.target.registryURL`,priority=1
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
// +kubebuilder:validation:XValidation:rule="!has(self.dataSource) || self.dataSource.type != 'ObjectRef' || !has(self.dataSource.objectRef) || self.dataSource.objectRef.kind != 'VirtualDisk'",message="a VirtualDisk is made from a ClusterVirtualImage, a VirtualImage or a VirtualDiskSnapshot: to copy a disk, make a VirtualDiskSnapshot of it (or a VirtualImage, objectRef kind VirtualDisk) and the new disk from that"
// +kubebuilder:validation:XValidation:rule="!has(self.dataSource) || !has(self.dataSource.objectRef) || !has(self.dataSource.objectRef.namespace)",message="a VirtualDisk's objectRef names an image or a snapshot in the disk's namespace, or a ClusterVirtualImage: leave out objectRef.namespace"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.persistentVolumeClaim) || !has(oldSelf.persistentVolumeClaim.size) || (has(self.persistentVolumeClaim) && has(self.persistentVolumeClaim.size) && quantity(string(self.persistentVolumeClaim.size)).compareTo(quantity(string(oldSelf.persistentVolumeClaim.size))) >= 0)",message="persistentVolumeClaim.size cannot be made smaller (or removed): a disk only grows"
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
	// Mounted is true while the VM holds the disk (Ferry records only VMs that do).
	// +optional
	Mounted bool `json:"mounted,omitempty"`
}

// VirtualDiskStatus is the observed disk.
type VirtualDiskStatus struct {
	ImportStatus `json:",inline"`
	Capacity     string `json:"capacity,omitempty"`
	// Path is the disk's file on the shared storage.
	Path string `json:"path,omitempty"`
	// AttachedToVirtualMachines is the VM that holds the disk; one at a time.
	AttachedToVirtualMachines []AttachedVirtualMachine `json:"attachedToVirtualMachines,omitempty"`
}

// Condition types and reasons of a disk's resize (Deckhouse's vdcondition Resizing).
const (
	DiskConditionResizing = "Resizing"
	// ReasonResizeInProgress: the disk's file is being grown, or waits for its VM to stop.
	ReasonResizeInProgress = "InProgress"
	ReasonResized          = "Resized"
	// ReasonResizeRefused: the size asked for is below the disk's (the CRD's rule refuses
	// such an edit; an image larger than the size asked for comes here).
	ReasonResizeRefused = "ResizeRefused"
)

// VirtualDisk is a VM's disk on storage that every node reaches.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vd,categories=all;virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Capacity",type=string,JSONPath=`.status.capacity`
// +kubebuilder:printcolumn:name="InUse",type=string,JSONPath=`.status.conditions[?(@.type=='InUse')].status`,priority=1
// +kubebuilder:printcolumn:name="VirtualMachine",type=string,JSONPath=`.status.attachedToVirtualMachines[?(@.mounted==true)].name`,description="Name of the virtual machine the disk is attached to."
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`,priority=1
// +kubebuilder:printcolumn:name="StorageClass",type=string,JSONPath=`.status.storageClassName`,priority=1
// +kubebuilder:printcolumn:name="TargetPVC",type=string,JSONPath=`.status.target.persistentVolumeClaimName`,priority=1
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
