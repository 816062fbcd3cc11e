package v1alpha2

// MigrationRequest is what the migration controller asks a source node's agent to do, in
// the source pod's AnnotationMigrateTo. It is not an API object.
// +kubebuilder:object:generate=false
type MigrationRequest struct {
	// URI is where the target's QEMU listens (tcp:ADDR:PORT).
	URI string `json:"uri"`
	// TargetNode is the target pod's node: over migration TLS the target's certificate
	// must name it.
	TargetNode               string `json:"targetNode,omitempty"`
	MaxBandwidthBytes        int64  `json:"maxBandwidthBytes"`
	DowntimeLimitMs          int64  `json:"downtimeLimitMs"`
	AutoConverge             bool   `json:"autoConverge"`
	CompletionTimeoutSeconds int64  `json:"completionTimeoutSeconds"`
	ProgressTimeoutSeconds   int64  `json:"progressTimeoutSeconds"`
	// BlockDevices are the hot-plugged disks the target pod was started with: the source
	// refuses to migrate unless its VM has exactly those (hotplug_wire.go).
	BlockDevices []HotplugSlot `json:"blockDevices,omitempty"`
}

// MigrationProgress is what a source node's agent reports, in AnnotationMigrationStatus.
// +kubebuilder:object:generate=false
type MigrationProgress struct {
	// URI is the target of the migration this is about.
	URI string `json:"uri,omitempty"`
	// Status is QEMU's: setup, active, completed, failed, cancelled, ...
	Status           string `json:"status"`
	TotalTimeMs      int64  `json:"totalTimeMs,omitempty"`
	DowntimeMs       int64  `json:"downtimeMs,omitempty"`
	TransferredBytes int64  `json:"transferredBytes,omitempty"`
	RemainingBytes   int64  `json:"remainingBytes,omitempty"`
	TotalBytes       int64  `json:"totalBytes,omitempty"`
	// DirtySyncCount is QEMU's dirty-sync-count: 1 during the first pass over memory, then
	// one more for each pass over the pages dirtied meanwhile.
	DirtySyncCount  int64  `json:"dirtySyncCount,omitempty"`
	ThrottlePercent int64  `json:"throttlePercent,omitempty"`
	Error           string `json:"error,omitempty"`
}

// Finished tells whether the migration ended, well or not.
func (p MigrationProgress) Finished() bool {
	switch p.Status {
	case "completed", "failed", "cancelled":
		return true
	}
	return false
}

// GuestAgentReport is what a node's agent learned from the QEMU guest agent of a VM, in the
// message of the launcher pod's PodConditionGuestAgent. It is not an API object.
// +kubebuilder:object:generate=false
type GuestAgentReport struct {
	OS         *GuestOSInfo     `json:"os,omitempty"`
	Hostname   string           `json:"hostname,omitempty"`
	Interfaces []GuestInterface `json:"interfaces,omitempty"`
}
