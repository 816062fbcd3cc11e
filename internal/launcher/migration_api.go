package launcher

// The migration API of the launcher: what POST /migrate takes and what GET /status
// reports of an outgoing migration, with their defaults and checks.

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Migration defaults, used when a MigrationRequest leaves a field zero. The
// migration controller may use them to fill in its own requests.
const (
	// DefaultMaxBandwidth caps the migration stream at 1 GiB/s (bytes/s).
	DefaultMaxBandwidth int64 = 1 << 30
	// DefaultDowntimeLimit is the longest tolerated stop-and-copy pause
	// (QEMU's own default).
	DefaultDowntimeLimit = 300 * time.Millisecond
	// DefaultCompletionTimeoutPerGiB bounds a whole migration: it is given
	// this long per GiB of guest RAM (rounded up to a whole GiB, so at
	// least this long), then cancelled. 150 s is KubeVirt's and Deckhouse's
	// default, so operators get the behaviour they know. At the default
	// 1 GiB/s a quiet GiB moves in seconds even under TCG; the budget is
	// for a guest that keeps redirtying memory, and it is an order of
	// magnitude smaller than KubeVirt's former 800 s/GiB, which let a
	// hopeless migration occupy two nodes for over 13 minutes per GiB.
	// Rounding up gives small guests the full 150 s: setup, connection and
	// device-state costs do not shrink with RAM.
	DefaultCompletionTimeoutPerGiB = 150 * time.Second
	// DefaultProgressTimeout cancels a migration whose remaining bytes have
	// not reached a new low for this long (KubeVirt's and Deckhouse's
	// default as well).
	DefaultProgressTimeout = 150 * time.Second

	// maxTimeoutSeconds bounds the request timeouts (one week).
	maxTimeoutSeconds = 7 * 24 * 3600
	// maxDowntimeLimitMs is QEMU's upper bound for downtime-limit.
	maxDowntimeLimitMs = 2000 * 1000
	// migrationPollInterval is how often the source polls query-migrate.
	migrationPollInterval = 100 * time.Millisecond
)

// DefaultCompletionTimeout returns the completion timeout used for a guest
// with memoryBytes of RAM: DefaultCompletionTimeoutPerGiB per started GiB.
func DefaultCompletionTimeout(memoryBytes int64) time.Duration {
	gib := (memoryBytes + (1<<30 - 1)) >> 30
	return time.Duration(max(gib, 1)) * DefaultCompletionTimeoutPerGiB
}

// MigrationRequest is the body of POST /migrate. Zero numeric fields take
// the defaults above (the completion timeout depends on the guest's RAM,
// see DefaultCompletionTimeout).
type MigrationRequest struct {
	// URI is the target launcher's Status.IncomingURI, "tcp:HOST:PORT".
	URI string `json:"uri"`
	// MaxBandwidthBytes caps the stream, in bytes per second.
	MaxBandwidthBytes int64 `json:"maxBandwidthBytes,omitempty"`
	// DowntimeLimitMs is the longest tolerated final pause.
	DowntimeLimitMs int64 `json:"downtimeLimitMs,omitempty"`
	// AutoConverge lets QEMU throttle the guest's vCPUs when it dirties
	// memory faster than the stream carries it (off by default, as in
	// KubeVirt: it slows the guest down).
	AutoConverge bool `json:"autoConverge,omitempty"`
	// CompletionTimeoutSeconds: not completed within this → cancelled,
	// status "failed".
	CompletionTimeoutSeconds int64 `json:"completionTimeoutSeconds,omitempty"`
	// ProgressTimeoutSeconds: remaining bytes not decreasing for this long →
	// cancelled, status "failed".
	ProgressTimeoutSeconds int64 `json:"progressTimeoutSeconds,omitempty"`
	// TargetNode is the target's node name. With migration TLS
	// (Options.MigrationTLSDir) it is required: the target's certificate must
	// carry it (the URI's address is not in the certificate).
	TargetNode string `json:"targetNode,omitempty"`
	// BlockDevices are the hot-plugged disks the target was started with (none when
	// empty): the migration is refused unless the VM has exactly those, at those slots.
	BlockDevices []MigrationBlockDevice `json:"blockDevices,omitempty"`
}

// Validate checks the request without applying defaults.
func (r MigrationRequest) Validate() error {
	if err := validateMigrationURI(r.URI); err != nil {
		return err
	}
	switch {
	case r.MaxBandwidthBytes < 0:
		return fmt.Errorf("maxBandwidthBytes must not be negative (0 means %d)", DefaultMaxBandwidth)
	case r.DowntimeLimitMs < 0:
		return fmt.Errorf("downtimeLimitMs must not be negative (0 means %d)", DefaultDowntimeLimit.Milliseconds())
	case r.DowntimeLimitMs > maxDowntimeLimitMs:
		return fmt.Errorf("downtimeLimitMs %d exceeds QEMU's maximum %d", r.DowntimeLimitMs, maxDowntimeLimitMs)
	case r.CompletionTimeoutSeconds < 0 || r.CompletionTimeoutSeconds > maxTimeoutSeconds:
		return fmt.Errorf("completionTimeoutSeconds must be between 0 (default) and %d", maxTimeoutSeconds)
	case r.ProgressTimeoutSeconds < 0 || r.ProgressTimeoutSeconds > maxTimeoutSeconds:
		return fmt.Errorf("progressTimeoutSeconds must be between 0 (default) and %d", maxTimeoutSeconds)
	case r.TargetNode != "" && len(validation.IsDNS1123Subdomain(r.TargetNode)) > 0:
		return fmt.Errorf("targetNode %q is not a node name", r.TargetNode)
	case len(r.BlockDevices) > MaxBlockDevices:
		return fmt.Errorf("blockDevices: %d, at most %d", len(r.BlockDevices), MaxBlockDevices)
	}
	for _, d := range r.BlockDevices {
		if d.Slot < hypervisor.HotplugFirstSlot || d.Slot > hypervisor.HotplugLastSlot || len(d.Path) > maxPath {
			return fmt.Errorf("blockDevices: slot %d or path out of bounds", d.Slot)
		}
	}
	return nil
}

func validateMigrationURI(uri string) error {
	if uri == "" {
		return errors.New("uri is required (tcp:HOST:PORT, the target's incomingURI)")
	}
	rest, ok := strings.CutPrefix(uri, "tcp:")
	if !ok {
		return fmt.Errorf("uri %q: only tcp:HOST:PORT is supported", uri)
	}
	if strings.ContainsAny(rest, " \t\r\n,") {
		return fmt.Errorf("uri %q: unexpected whitespace or comma", uri)
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		return fmt.Errorf("uri %q: %v", uri, err)
	}
	if host == "" {
		return fmt.Errorf("uri %q: empty host", uri)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("uri %q: port must be 1-65535", uri)
	}
	return nil
}

// MigrationStatus is an outgoing migration as seen by the source launcher
// (Status.Migration), from QEMU's query-migrate. It is kept after the end.
type MigrationStatus struct {
	URI string `json:"uri"`
	// Status is QEMU's: "setup", "active", "device", "cancelling",
	// "completed", "failed", "cancelled", ... A migration the launcher
	// cancelled because of a timeout reports "failed" with Error set.
	Status             string    `json:"status"`
	StartedAt          time.Time `json:"startedAt,omitzero"`
	TotalTimeMs        int64     `json:"totalTimeMs"`
	DowntimeMs         int64     `json:"downtimeMs"`
	ExpectedDowntimeMs int64     `json:"expectedDowntimeMs,omitempty"`
	SetupTimeMs        int64     `json:"setupTimeMs"`
	TransferredBytes   int64     `json:"transferredBytes"`
	RemainingBytes     int64     `json:"remainingBytes"`
	TotalBytes         int64     `json:"totalBytes"`
	DirtyPagesRate     int64     `json:"dirtyPagesRate"` // pages/s
	DirtySyncCount     int64     `json:"dirtySyncCount,omitempty"`
	ThrottlePercent    int64     `json:"throttlePercent"`
	Error              string    `json:"error,omitempty"`
	// TLSHostname is set when the stream is TLS: the node name the target's
	// certificate had to carry (QEMU's tls-hostname, read back from QEMU).
	TLSHostname string `json:"tlsHostname,omitempty"`
}

// Finished reports whether the migration reached a terminal status.
func (m *MigrationStatus) Finished() bool {
	switch m.Status {
	case "completed", "failed", "cancelled":
		return true
	}
	return false
}
