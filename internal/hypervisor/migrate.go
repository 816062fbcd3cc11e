package hypervisor

import (
	"context"
	"fmt"
	"time"
)

// MigrationParams tunes an outgoing live migration.
type MigrationParams struct {
	// MaxBandwidth in bytes per second (0: leave QEMU's default).
	MaxBandwidth int64
	// DowntimeLimit is the maximum tolerated stop-and-copy pause
	// (0: leave QEMU's default of 300 ms).
	DowntimeLimit time.Duration
	// AutoConverge throttles guest vCPUs when dirtying outpaces transfer.
	AutoConverge bool
	// TLS, when set, encrypts the stream and checks the target's certificate; nil sends
	// it in the clear.
	TLS *MigrationTLS
}

// DefaultMigrationParams returns 1 GiB/s, 300 ms downtime, auto-converge on.
func DefaultMigrationParams() MigrationParams {
	return MigrationParams{MaxBandwidth: 1 << 30, DowntimeLimit: 300 * time.Millisecond, AutoConverge: true}
}

// MigrationInfo is the interesting part of query-migrate.
type MigrationInfo struct {
	// Status is "none", "setup", "active", "device", "pre-switchover",
	// "completed", "failed", "cancelling", "cancelled", ...
	Status           string
	TotalTime        time.Duration // elapsed so far, or total once completed
	Downtime         time.Duration // valid once completed
	ExpectedDowntime time.Duration
	SetupTime        time.Duration
	RAMTotal         int64
	RAMTransferred   int64
	RAMRemaining     int64
	DirtyPagesRate   int64 // pages/s
	DirtySyncCount   int64
	Mbps             float64
	CPUThrottle      int64 // auto-converge throttle percentage
	Error            string
}

// Finished reports whether the status is terminal.
func (m MigrationInfo) Finished() bool {
	switch m.Status {
	case "completed", "failed", "cancelled":
		return true
	}
	return false
}

// PrepareIncoming makes a destination started with Config.Incoming listen
// for the migration stream on uri (e.g. "tcp:0.0.0.0:4444"). With tls it
// accepts only a TLS stream from a source whose certificate the CA in tls.Dir
// signed (and, with tls.AllowedPeers, whose name matches).
func (inst *Instance) PrepareIncoming(ctx context.Context, uri string, tls *MigrationTLS) error {
	if !inst.cfg.Incoming {
		return fmt.Errorf("hypervisor: PrepareIncoming on an instance not started with Incoming")
	}
	if tls != nil {
		if err := inst.setupTLS(ctx, "server", *tls, map[string]any{}); err != nil {
			return err
		}
	}
	return inst.qmp.Execute(ctx, "migrate-incoming", map[string]any{"uri": uri}, nil)
}

// MigrateOut sets the migration parameters and capabilities and starts
// migrating to uri (e.g. "tcp:10.0.0.2:4444"), over TLS with p.TLS. It returns once QEMU accepted
// the command; poll MigrationStatus or use WaitMigration. On success the
// source ends in state "postmigrate" and should then be quit (Shutdown).
func (inst *Instance) MigrateOut(ctx context.Context, uri string, p MigrationParams) error {
	// events: QEMU announces each state change (MIGRATION), so the end is seen at once.
	caps := []map[string]any{{"capability": "auto-converge", "state": p.AutoConverge}, {"capability": "events", "state": true}}
	if err := inst.qmp.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps}, nil); err != nil {
		return err
	}
	params := map[string]any{}
	if p.MaxBandwidth > 0 {
		params["max-bandwidth"] = p.MaxBandwidth
	}
	if p.DowntimeLimit > 0 {
		params["downtime-limit"] = p.DowntimeLimit.Milliseconds()
	}
	switch {
	case p.TLS != nil:
		if err := inst.setupTLS(ctx, "client", *p.TLS, params); err != nil {
			return err
		}
	case len(params) > 0:
		if err := inst.qmp.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
			return err
		}
	}
	return inst.qmp.Execute(ctx, "migrate", map[string]any{"uri": uri}, nil)
}

type queryMigrate struct {
	Status           string `json:"status"`
	TotalTime        int64  `json:"total-time"`
	Downtime         int64  `json:"downtime"`
	ExpectedDowntime int64  `json:"expected-downtime"`
	SetupTime        int64  `json:"setup-time"`
	CPUThrottle      int64  `json:"cpu-throttle-percentage"`
	ErrorDesc        string `json:"error-desc"`
	RAM              *struct {
		Transferred    int64   `json:"transferred"`
		Remaining      int64   `json:"remaining"`
		Total          int64   `json:"total"`
		DirtyPagesRate int64   `json:"dirty-pages-rate"`
		DirtySyncCount int64   `json:"dirty-sync-count"`
		Mbps           float64 `json:"mbps"`
	} `json:"ram"`
}

// MigrationStatus runs query-migrate (works on source and destination; the
// destination only reports Status).
func (inst *Instance) MigrationStatus(ctx context.Context) (MigrationInfo, error) {
	var q queryMigrate
	for tries := 0; ; tries++ {
		if err := inst.qmp.Execute(ctx, "query-migrate", nil, &q); err != nil {
			return MigrationInfo{}, err
		}
		// QEMU says "completed" a moment before it has summed up the total time and the
		// downtime (both 0 until then): ask again shortly.
		if q.Status != "completed" || q.TotalTime > 0 || tries == 25 {
			break
		}
		select {
		case <-ctx.Done():
			return MigrationInfo{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		q = queryMigrate{}
	}
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	info := MigrationInfo{
		Status:           q.Status,
		TotalTime:        ms(q.TotalTime),
		Downtime:         ms(q.Downtime),
		ExpectedDowntime: ms(q.ExpectedDowntime),
		SetupTime:        ms(q.SetupTime),
		CPUThrottle:      q.CPUThrottle,
		Error:            q.ErrorDesc,
	}
	if info.Status == "" {
		info.Status = "none"
	}
	if q.RAM != nil {
		info.RAMTotal = q.RAM.Total
		info.RAMTransferred = q.RAM.Transferred
		info.RAMRemaining = q.RAM.Remaining
		info.DirtyPagesRate = q.RAM.DirtyPagesRate
		info.DirtySyncCount = q.RAM.DirtySyncCount
		info.Mbps = q.RAM.Mbps
	}
	return info, nil
}

// WaitMigration polls MigrationStatus every interval until a terminal status
// or ctx ends. A "failed" migration is returned with an error.
func (inst *Instance) WaitMigration(ctx context.Context, interval time.Duration) (MigrationInfo, error) {
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		info, err := inst.MigrationStatus(ctx)
		if err != nil {
			return info, err
		}
		if info.Finished() {
			if info.Status == "failed" {
				return info, fmt.Errorf("hypervisor: migration failed: %s", info.Error)
			}
			return info, nil
		}
		select {
		case <-ctx.Done():
			return info, ctx.Err()
		case <-t.C:
		}
	}
}

// CancelMigration aborts an outgoing migration (migrate_cancel); the source
// keeps running.
func (inst *Instance) CancelMigration(ctx context.Context) error {
	return inst.qmp.Execute(ctx, "migrate_cancel", nil, nil)
}

// Resume continues a paused guest (QMP cont), e.g. a source left paused by
// a migration that failed after it had stopped the vCPUs.
func (inst *Instance) Resume(ctx context.Context) error {
	return inst.qmp.Execute(ctx, "cont", nil, nil)
}
