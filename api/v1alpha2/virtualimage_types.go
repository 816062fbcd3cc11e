package v1alpha2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ImageUploadURLs say where the bytes of an object with dataSource.type Upload go: a PUT
// (or POST) of the image's file to either URL (`curl -T FILE URL`, or `ferry v upload`).
// Each URL holds a token: whoever may read the object's status may upload to it.
type ImageUploadURLs struct {
	// External is the URL to upload from outside the cluster (under `ferry up`: the
	// controller's address on loopback).
	// +optional
	External string `json:"external,omitempty"`
	// InCluster is the URL to upload from a pod in the cluster (the controller's Service).
	// +optional
	InCluster string `json:"inCluster,omitempty"`
}

// ImportStatus is what images and disks report while their bytes arrive.
type ImportStatus struct {
	Phase ImagePhase `json:"phase,omitempty"`
	// Progress of the download or upload, e.g. "45%" (100% once Ready).
	// +optional
	Progress string `json:"progress,omitempty"`
	// DownloadSpeed while Provisioning from an http(s) URL or an upload.
	// +optional
	DownloadSpeed *DownloadSpeed `json:"downloadSpeed,omitempty"`
	// ImportRetry is set while a failed download waits to be tried again.
	// +optional
	ImportRetry *ImportRetry `json:"importRetry,omitempty"`
	// ImageUploadURLs say where to upload the bytes of an object with dataSource.type
	// Upload, while it waits for them.
	// +optional
	ImageUploadURLs *ImageUploadURLs `json:"imageUploadURLs,omitempty"`
	// SourceUID is the UID of the image or disk an ObjectRef source named when the
	// object was made from it.
	// +optional
	SourceUID  types.UID          `json:"sourceUID,omitempty"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// ImageStatus is the observed state of a ClusterVirtualImage or a VirtualImage.
type ImageStatus struct {
	ImportStatus `json:",inline"`
	// Format is qcow2, raw or iso.
	Format string `json:"format,omitempty"`
	// CDROM is true for an image a VM sees as a CD-ROM (an ISO).
	// +optional
	CDROM bool      `json:"cdrom,omitempty"`
	Size  ImageSize `json:"size,omitempty"`
	// Path is where the image is kept on the shared storage.
	Path string `json:"path,omitempty"`
}

// ImageStorage is where Deckhouse keeps a VirtualImage. Ferry keeps every image as a file
// on its shared storage directory whatever this says; the image's StorageReady
// condition says so.
// +kubebuilder:validation:Enum=ContainerRegistry;Kubernetes;PersistentVolumeClaim
type ImageStorage string

const (
	StorageContainerRegistry     ImageStorage = "ContainerRegistry"
	StorageKubernetes            ImageStorage = "Kubernetes"
	StoragePersistentVolumeClaim ImageStorage = "PersistentVolumeClaim"
)

// ImageClaim is Deckhouse's PVC settings of an image kept as PersistentVolumeClaim.
type ImageClaim struct {
	// StorageClassName is accepted and not used: Ferry keeps images as files.
	// +optional
	StorageClassName string `json:"storageClassName,omitempty"`
}

// VirtualImageSpec is the desired image.
// +kubebuilder:validation:XValidation:rule="!has(self.dataSource.objectRef) || !has(self.dataSource.objectRef.namespace)",message="a VirtualImage's objectRef names an object of the image's namespace (or a ClusterVirtualImage): leave out objectRef.namespace"
type VirtualImageSpec struct {
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="dataSource is immutable"
	DataSource DataSource `json:"dataSource"`
	// Storage is Deckhouse's choice of where to keep the image; Ferry accepts each value
	// and keeps the image as a file on its shared storage (see the StorageReady condition).
	// +kubebuilder:default=ContainerRegistry
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="storage is immutable"
	Storage ImageStorage `json:"storage"`
	// +optional
	PersistentVolumeClaim ImageClaim `json:"persistentVolumeClaim,omitempty"`
}

// VirtualImageStatus is the observed image.
type VirtualImageStatus struct {
	ImageStatus `json:",inline"`
}

// Condition type and reason that say how an image is kept.
const (
	// ImageConditionStorageReady says where Ferry keeps an image: always a file on the
	// shared storage, whatever spec.storage asks for.
	ImageConditionStorageReady = "StorageReady"
	ReasonStoredAsFile         = "StoredAsFile"
)

// VirtualImage is a boot image in a namespace: disks of that namespace are made from
// it, and its VMs attach it (an ISO as a CD-ROM).
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=vi,categories=all;virtualization
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="CDROM",type=boolean,JSONPath=`.status.cdrom`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`
// +kubebuilder:printcolumn:name="StoredSize",type=string,JSONPath=`.status.size.stored`,priority=1
// +kubebuilder:printcolumn:name="UnpackedSize",type=string,JSONPath=`.status.size.unpacked`,priority=1
// +kubebuilder:printcolumn:name="Registry URL",type=string,JSONPath=`.status.target.registryURL`,priority=1
// +kubebuilder:printcolumn:name="TargetPVC",type=string,JSONPath=`.status.target.persistentVolumeClaimName`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type VirtualImage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualImageSpec   `json:"spec"`
	Status VirtualImageStatus `json:"status,omitempty"`
}

// VirtualImageList is a list of VirtualImage.
// +kubebuilder:object:root=true
type VirtualImageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualImage `json:"items"`
}

// ImageSource is the image's data source.
func (i *ClusterVirtualImage) ImageSource() *DataSource { return &i.Spec.DataSource }

// ImageState is the image's status.
func (i *ClusterVirtualImage) ImageState() *ImageStatus { return &i.Status.ImageStatus }

// ImageSource is the image's data source.
func (i *VirtualImage) ImageSource() *DataSource { return &i.Spec.DataSource }

// ImageState is the image's status.
func (i *VirtualImage) ImageState() *ImageStatus { return &i.Status.ImageStatus }

func init() {
	SchemeBuilder.Register(&VirtualImage{}, &VirtualImageList{})
}

// ImportState is the part of the image's status an import writes.
func (i *ClusterVirtualImage) ImportState() *ImportStatus { return &i.Status.ImportStatus }

// ImportState is the part of the image's status an import writes.
func (i *VirtualImage) ImportState() *ImportStatus { return &i.Status.ImportStatus }

// ImportState is the part of the disk's status an import writes.
func (d *VirtualDisk) ImportState() *ImportStatus { return &d.Status.ImportStatus }
