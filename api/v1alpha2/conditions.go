package v1alpha2

// Condition types of a VirtualMachine.
const (
	// VMConditionRunning is True while the guest is up and its heartbeat is fresh.
	VMConditionRunning = "Running"
	// VMConditionBlockDevicesReady is True when every disk of the VM is ready and held by it.
	VMConditionBlockDevicesReady = "BlockDevicesReady"
	// VMConditionIPAddressReady is True when the VM's VirtualMachineIPAddress is bound and
	// attached to it (Deckhouse's name).
	VMConditionIPAddressReady = "VirtualMachineIPAddressReady"
	// VMConditionPodScheduled mirrors the launcher pod's scheduling.
	VMConditionPodScheduled = "Scheduled"
	// VMConditionMigratable says whether the VM can be live-migrated.
	VMConditionMigratable = "Migratable"
	// VMConditionEvictionRequired is set when the VM's node is being drained.
	VMConditionEvictionRequired = "EvictionRequired"
	// VMConditionAgentReady is True while the QEMU guest agent in the guest answers.
	VMConditionAgentReady = "AgentReady"
)

// Reasons on VirtualMachine conditions.
const (
	// ReasonGuestRunning: QEMU runs the guest's vCPUs. What the guest prints, if anything,
	// does not matter.
	ReasonGuestRunning = "GuestRunning"
	// ReasonGuestPanicked: the guest's kernel reported a panic (pvpanic); QEMU keeps it
	// paused for the runPolicy to decide.
	ReasonGuestPanicked = "GuestPanicked"
	// ReasonGuestIOError: QEMU paused the guest on a disk I/O error (werror/rerror=stop).
	ReasonGuestIOError = "IOError"
	// ReasonGuestNotRunning: QEMU is up but does not run the guest (paused, migrating in,
	// starting).
	ReasonGuestNotRunning = "GuestNotRunning"
	// MessageQEMUStarting is the guest-ready gate's message until the launcher has QEMU
	// running; the VM says the same before the gate is set, so that setting it changes
	// nothing in the VM's status (a write less per start).
	MessageQEMUStarting = "waiting for the launcher to start QEMU"
	ReasonAgentReady    = "AgentReady"
	ReasonAgentNotReady = "AgentNotReady"
	ReasonVMStopped     = "Stopped"
	ReasonPodNotRunning = "PodNotRunning"
	ReasonDiskNotFound  = "DiskNotFound"
	ReasonDiskNotReady  = "DiskNotReady"
	ReasonDiskInUse     = "DiskInUse"
	ReasonDisksReady    = "DisksReady"
	ReasonImageFailed   = "ImageFailed"
	// ReasonDiskRefused: a disk or image is Ready but is not given to the VM's launcher:
	// its status.path is not the file the storage derives from its name, or its file is
	// not an image Ferry imports. The message says which and why.
	ReasonDiskRefused     = "DiskRefused"
	ReasonIPLeased        = "VirtualMachineIPAddressReady"
	ReasonIPUnavailable   = "VirtualMachineIPAddressNotAvailable"
	ReasonUnschedulable   = "Unschedulable"
	ReasonScheduled       = "Scheduled"
	ReasonLauncherFailed  = "LauncherFailed"
	ReasonStoppedByPolicy = "StoppedByRunPolicy"
	ReasonStoppedManually = "StoppedManually"
	ReasonGuestShutdown   = "GuestShutdown"
	ReasonCrashed         = "Crashed"
	ReasonRestartBackoff  = "RestartBackoff"

	// Reasons of EvictionRequired: the node was cordoned and is drained, or a pod eviction
	// was asked for on a schedulable node.
	ReasonNodeDrained       = "NodeDrained"
	ReasonEvictionRequested = "EvictionRequested"
)

// VMConditionIPAddressReadyLegacy is the type Ferry's releases before
// VirtualMachineIPAddress used (the VM controller removes it). The reasons of
// VMConditionIPAddressReady are Deckhouse's: ReasonIPLeased (Ready: bound and attached to the VM); ReasonIPNotReady
// (the VirtualMachineIPAddress is missing, not bound yet, or attached to another VM);
// ReasonIPUnavailable (it cannot be bound: its address is outside the range, or held);
// ReasonIPNotAssigned (the VM holds its address, and the guest agent reports the guest's
// interfaces without it).
const (
	VMConditionIPAddressReadyLegacy = "IPAddressReady"
	ReasonIPNotReady                = "VirtualMachineIPAddressNotReady"
	ReasonIPNotAssigned             = "VirtualMachineIPAddressNotAssigned"
)

// Launcher pod labels and annotations of a migration.
const (
	// LabelMigrationTarget marks a pod that waits for an incoming migration; its value is the
	// operation's name. The label is removed when the pod takes over the VM.
	LabelMigrationTarget = "virtualization.ferryvm.io/migration-target"
	// AnnotationIncomingURI on a target pod is where its QEMU listens (set by the node agent).
	AnnotationIncomingURI = "virtualization.ferryvm.io/incoming-uri"
	// AnnotationMigrateTo on a source pod asks its node agent to migrate (JSON MigrationRequest).
	AnnotationMigrateTo = "virtualization.ferryvm.io/migrate-to"
	// AnnotationMigrationAbort on a source pod asks its node agent to cancel the migration.
	AnnotationMigrationAbort = "virtualization.ferryvm.io/migration-abort"
	// AnnotationMigrationStatus on a source pod is the migration's progress (JSON, by the agent).
	AnnotationMigrationStatus = "virtualization.ferryvm.io/migration-status"
	// ReasonPodMigrated is the terminated reason of a source pod whose VM moved away.
	ReasonPodMigrated = "Migrated"
	// PodConditionGuestReady is the readiness gate of launcher pods: the node agent sets it
	// True while QEMU runs the guest's vCPUs, so a pod is Ready (for the kubelet, which
	// knows nothing of guests, too) only while its guest runs. False carries the evidence
	// in its reason: ReasonGuestPanicked, ReasonGuestIOError or ReasonGuestNotRunning.
	PodConditionGuestReady = "virtualization.ferryvm.io/guest-ready"
	// PodConditionGuestAgent is a launcher pod's condition (not a readiness gate) that the
	// node agent keeps: True while the QEMU guest agent answers, its message then the JSON
	// of a GuestAgentReport. Pod status is written by nodes only, never by a tenant.
	PodConditionGuestAgent = "virtualization.ferryvm.io/guest-agent"
)

// Condition types and reasons of images and disks.
const (
	ImageConditionReady   = "Ready"
	ReasonImported        = "Imported"
	ReasonImportFailed    = "ImportFailed"
	ReasonProvisioning    = "Provisioning"
	ReasonSourceNotReady  = "SourceNotReady"
	ReasonSourceNotFound  = "SourceNotFound"
	ReasonProvisionFailed = "ProvisioningFailed"
)

// Labels and annotations that Ferry sets.
const (
	// LabelVMName is on every launcher pod: it names the VM (the seed's drain selector).
	LabelVMName = "vm.kubevirt.internal.virtualization.deckhouse.io/name"
	// LabelLauncher marks launcher pods.
	LabelLauncher = "kubevirt.internal.virtualization.deckhouse.io"
	// AnnotationPowerState is what the last Start/Stop operation or guest shutdown asked for: On or Off.
	AnnotationPowerState = "virtualization.ferryvm.io/power-state"
	// AnnotationRunDir is where a launcher keeps its sockets and the guest's serial log.
	AnnotationRunDir = "virtualization.ferryvm.io/run-dir"
	// AnnotationEvacuateFrom on a VM names the node it must leave: an eviction of its
	// launcher pod was refused so that the VM can be live-migrated off that node first.
	AnnotationEvacuateFrom = "virtualization.ferryvm.io/evacuate-from"
	// LabelEvacuation on a VirtualMachineOperation created by Ferry to move a VM off a node
	// being drained; its value is that node.
	LabelEvacuation = "virtualization.ferryvm.io/evacuation"
	// FinalizerVM keeps a VM until its pods, disks and address are released.
	FinalizerVM = "virtualization.ferryvm.io/vm"
	// FinalizerStorage keeps an image or disk until its file is removed.
	FinalizerStorage = "virtualization.ferryvm.io/storage"
	// FinalizerIPLease keeps a lease of an address while a VM holds it.
	FinalizerIPLease = "virtualization.ferryvm.io/ip-lease"
)

// Reasons of images and disks whose source is an upload or another object.
const (
	// ReasonWaitForUserUpload: the object's dataSource is Upload and its bytes did not
	// arrive yet (status.imageUploadURLs says where to send them).
	ReasonWaitForUserUpload = "WaitForUserUpload"
	// ReasonImageInUse: a deleted image's file is kept while disks made from it (qcow2
	// overlays that read it) exist.
	ReasonImageInUse = "ImageInUse"
)
