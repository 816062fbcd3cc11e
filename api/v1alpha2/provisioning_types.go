package v1alpha2

// ProvisioningType says where a VM's first-boot configuration comes from.
// +kubebuilder:validation:Enum=UserData;UserDataRef;SysprepRef
type ProvisioningType string

const (
	// ProvisioningUserData: cloud-init user-data inline in spec.provisioning.userData.
	ProvisioningUserData ProvisioningType = "UserData"
	// ProvisioningUserDataRef: cloud-init user-data in a Secret's key "userData".
	ProvisioningUserDataRef ProvisioningType = "UserDataRef"
	// ProvisioningSysprepRef: Windows answer files (autounattend.xml, unattend.xml) in a
	// Secret, given to the guest on a CD-ROM.
	ProvisioningSysprepRef ProvisioningType = "SysprepRef"
)

// Provisioning is how the guest configures itself on first boot: Ferry hands it a
// cloud-init NoCloud seed (or Sysprep's answer files) on a read-only CD-ROM.
// +kubebuilder:validation:XValidation:rule="self.type != 'UserData' || has(self.userData)",message="type UserData needs userData: the cloud-init user-data"
// +kubebuilder:validation:XValidation:rule="self.type != 'UserDataRef' || has(self.userDataRef)",message="type UserDataRef needs userDataRef: a Secret whose key userData holds the cloud-init user-data"
// +kubebuilder:validation:XValidation:rule="self.type != 'SysprepRef' || has(self.sysprepRef)",message="type SysprepRef needs sysprepRef: a Secret with autounattend.xml or unattend.xml"
// +kubebuilder:validation:XValidation:rule="!has(self.userData) || self.type == 'UserData'",message="userData goes only with type UserData"
// +kubebuilder:validation:XValidation:rule="!has(self.userDataRef) || self.type == 'UserDataRef'",message="userDataRef goes only with type UserDataRef"
// +kubebuilder:validation:XValidation:rule="!has(self.sysprepRef) || self.type == 'SysprepRef'",message="sysprepRef goes only with type SysprepRef"
type Provisioning struct {
	Type ProvisioningType `json:"type"`
	// UserData is the cloud-init user-data (for example a #cloud-config document), at most
	// 2048 bytes; larger data goes in a Secret named by userDataRef.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="size(bytes(self)) <= 2048",message="userData exceeds the 2048-byte limit: put larger data in a Secret and use userDataRef"
	// +optional
	UserData string `json:"userData,omitempty"`
	// UserDataRef names a Secret in the VM's namespace whose key userData holds the
	// cloud-init user-data.
	// +optional
	UserDataRef *UserDataRef `json:"userDataRef,omitempty"`
	// SysprepRef names a Secret in the VM's namespace whose keys are the answer files of
	// Windows setup (autounattend.xml, unattend.xml).
	// +optional
	SysprepRef *SysprepRef `json:"sysprepRef,omitempty"`
}

// ProvisioningRefKind is the kind of object provisioning data is read from.
// +kubebuilder:validation:Enum=Secret
type ProvisioningRefKind string

// SecretRefKind is the only kind provisioning data is read from.
const SecretRefKind ProvisioningRefKind = "Secret"

// UserDataRef names the Secret with a VM's cloud-init user-data.
type UserDataRef struct {
	// +kubebuilder:default=Secret
	Kind ProvisioningRefKind `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// SysprepRef names the Secret with a VM's Sysprep answer files.
type SysprepRef struct {
	// +kubebuilder:default=Secret
	Kind ProvisioningRefKind `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// UserDataKey is the key of a UserDataRef Secret that holds the user-data.
const UserDataKey = "userData"

// Condition and reasons of a VM's provisioning.
const (
	// VMConditionProvisioningReady is True when the VM's seed CD-ROM is built, False with
	// what to fix when its data cannot be had; absent on a VM without provisioning.
	VMConditionProvisioningReady = "ProvisioningReady"
	ReasonProvisioningReady      = "ProvisioningReady"
	ReasonProvisioningNotReady   = "ProvisioningNotReady"
)
