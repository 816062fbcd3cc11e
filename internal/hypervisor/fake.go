package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Fake is an in-memory stand-in for *Instance with the same lifecycle and
// migration method set (minus QMP), plus controls to drive it from tests.
// It also offers Heartbeat/Booted like *SerialFollower. No process runs.
//
// A fake starts "running" (or "inmigrate" when Config.Incoming). MigrateOut
// completes at once unless MigrateFunc is set; the source then reports
// "postmigrate".
type Fake struct {
	// MigrateFunc, if set, is called by MigrateOut and decides the outcome:
	// return an error to fail the command, or call SetMigration to shape
	// what MigrationStatus reports.
	MigrateFunc func(uri string, p MigrationParams) error
	// OnRun, if set (before the fake is used), is called each time the guest starts or
	// stops running: the status becomes or stops being "running", or the fake exits.
	// It is called with the fake's lock held: it must not call the fake.
	OnRun func(running bool)

	mu            sync.Mutex
	cfg           Config
	status        string
	done          chan struct{}
	exited        bool
	guestShutdown bool
	exitErr       error
	hbN           int64
	hbAt          time.Time
	booted        bool
	migration     MigrationInfo
	incomingURI   string
	incomingTLS   *MigrationTLS
	fault         *Fault
	calls         []string
	hotplugged    map[int]HotplugDisk
}

// NewFake returns a running fake for cfg.
func NewFake(cfg Config) *Fake {
	f := &Fake{cfg: cfg, status: "running", done: make(chan struct{}), migration: MigrationInfo{Status: "none"}}
	if cfg.Incoming {
		f.status = "inmigrate"
	}
	for _, d := range cfg.HotplugDisks {
		if f.hotplugged == nil {
			f.hotplugged = map[int]HotplugDisk{}
		}
		f.hotplugged[d.Slot] = d
	}
	return f
}

func (f *Fake) record(call string) {
	f.calls = append(f.calls, call)
}

// Calls returns the method calls made so far (e.g. "Shutdown", "MigrateOut tcp:...").
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// PID returns a made-up process id.
func (f *Fake) PID() int { return 4242 }

// RunDir returns Config.RunDir.
func (f *Fake) RunDir() string { return f.cfg.RunDir }

// Done is closed once the fake "process" has exited.
func (f *Fake) Done() <-chan struct{} { return f.done }

// setStatus changes the run state and tells OnRun when the guest starts or stops
// running. f.mu is held.
func (f *Fake) setStatus(s string) {
	was := f.status == "running"
	f.status = s
	if now := s == "running"; now != was && f.OnRun != nil {
		f.OnRun(now)
	}
}

// exit must be called with f.mu held.
func (f *Fake) exit(guest bool, err error) {
	if f.exited {
		return
	}
	f.exited, f.guestShutdown, f.exitErr = true, guest, err
	f.setStatus("shutdown")
	close(f.done)
}

// Status returns the current run state.
func (f *Fake) Status(ctx context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exited {
		return "", fmt.Errorf("qmp query-status: %w", ErrQMPClosed)
	}
	return f.status, nil
}

// Shutdown stops the fake: a running guest "powers off" (Wait reports
// guestShutdown), anything else is quit.
func (f *Fake) Shutdown(ctx context.Context, grace time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Shutdown")
	f.exit(f.status == "running", nil)
	return nil
}

// Kill stops the fake as a requested kill.
func (f *Fake) Kill() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Kill")
	f.exit(false, nil)
}

// Wait blocks until the fake exits; results mirror Instance.Wait.
func (f *Fake) Wait() (guestShutdown bool, err error) {
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.guestShutdown, f.exitErr
}

// GuestPowerOff simulates the guest powering itself off.
func (f *Fake) GuestPowerOff() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exit(true, nil)
}

// Crash simulates QEMU dying; Wait returns an *ExitError.
func (f *Fake) Crash(state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exit(false, &ExitError{State: state})
}

// SetStatus forces the run state (e.g. "paused").
func (f *Fake) SetStatus(status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setStatus(status)
}

// Panic simulates a guest kernel panic as QEMU run with -action panic=pause reports it: a
// GUEST_PANICKED fault and the run state "guest-panicked".
func (f *Fake) Panic() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault = &Fault{Reason: FaultPanicked, Message: "the guest's kernel panicked (simulated)", At: time.Now()}
	f.setStatus("guest-panicked")
}

// Fault mirrors Instance.Fault.
func (f *Fake) Fault() *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fault == nil {
		return nil
	}
	c := *f.fault
	return &c
}

// Tick simulates one heartbeat line (and the boot line before the first).
func (f *Fake) Tick() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.booted = true
	f.hbN++
	f.hbAt = time.Now()
}

// SetHeartbeat sets the heartbeat counter and its time, as a guest that
// migrated here brings its counter along: the next Tick continues from n.
func (f *Fake) SetHeartbeat(n int64, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hbN, f.hbAt = n, at
}

// Heartbeat mirrors SerialFollower.Heartbeat.
func (f *Fake) Heartbeat() (n int64, at time.Time, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hbN, f.hbAt, f.hbN > 0
}

// Booted mirrors SerialFollower.Booted.
func (f *Fake) Booted() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.booted
}

// PrepareIncoming records uri and tls (it checks no certificate); the fake
// must have been created Incoming.
func (f *Fake) PrepareIncoming(ctx context.Context, uri string, tls *MigrationTLS) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("PrepareIncoming " + uri)
	if !f.cfg.Incoming {
		return errors.New("hypervisor: PrepareIncoming on an instance not started with Incoming")
	}
	f.incomingURI, f.incomingTLS = uri, tls
	return nil
}

// IncomingURI returns the uri given to PrepareIncoming.
func (f *Fake) IncomingURI() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.incomingURI
}

// IncomingTLS returns the TLS settings given to PrepareIncoming (nil: plain).
func (f *Fake) IncomingTLS() *MigrationTLS {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.incomingTLS
}

// FinishIncoming simulates the end of an incoming migration: the
// destination starts running and reports "completed".
func (f *Fake) FinishIncoming() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setStatus("running")
	f.migration = MigrationInfo{Status: "completed"}
}

// MigrateOut starts a fake migration.
func (f *Fake) MigrateOut(ctx context.Context, uri string, p MigrationParams) error {
	f.mu.Lock()
	f.record("MigrateOut " + uri)
	hook := f.MigrateFunc
	f.mu.Unlock()
	if hook != nil {
		return hook(uri, p)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.migration = MigrationInfo{Status: "completed", TotalTime: 100 * time.Millisecond, Downtime: 10 * time.Millisecond}
	f.setStatus("postmigrate")
	return nil
}

// SetMigration sets what MigrationStatus returns; a "completed" status also
// moves the fake to "postmigrate".
func (f *Fake) SetMigration(info MigrationInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.migration = info
	if info.Status == "completed" && f.status == "running" {
		f.setStatus("postmigrate")
	}
}

// MigrationStatus returns the fake migration state.
func (f *Fake) MigrationStatus(ctx context.Context) (MigrationInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exited {
		return MigrationInfo{}, fmt.Errorf("qmp query-migrate: %w", ErrQMPClosed)
	}
	return f.migration, nil
}

// WaitMigration polls MigrationStatus until a terminal status.
func (f *Fake) WaitMigration(ctx context.Context, interval time.Duration) (MigrationInfo, error) {
	if interval <= 0 {
		interval = 10 * time.Millisecond
	}
	for {
		info, err := f.MigrationStatus(ctx)
		if err != nil || info.Finished() {
			if err == nil && info.Status == "failed" {
				err = fmt.Errorf("hypervisor: migration failed: %s", info.Error)
			}
			return info, err
		}
		select {
		case <-ctx.Done():
			return info, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// CancelMigration marks an unfinished migration cancelled.
func (f *Fake) CancelMigration(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("CancelMigration")
	if !f.migration.Finished() && f.migration.Status != "none" {
		f.migration.Status = "cancelled"
		f.setStatus("running")
	}
	return nil
}

// Resume moves a paused (or postmigrate) fake back to "running".
func (f *Fake) Resume(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Resume")
	if f.exited {
		return fmt.Errorf("qmp cont: %w", ErrQMPClosed)
	}
	f.setStatus("running")
	return nil
}

// AttachDisk records a hot-plug ("AttachDisk <slot> <path>"): the disk is checked as
// Instance.AttachDisk checks it, but for its file, and a taken slot is refused.
func (f *Fake) AttachDisk(ctx context.Context, d HotplugDisk) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(fmt.Sprintf("AttachDisk %d %s", d.Slot, d.Path))
	if err := d.Validate(); err != nil {
		return err
	}
	if f.exited {
		return errors.New("fake: exited")
	}
	if _, taken := f.hotplugged[d.Slot]; taken {
		return fmt.Errorf("fake: PCI slot %#x is taken", d.Slot)
	}
	if f.hotplugged == nil {
		f.hotplugged = map[int]HotplugDisk{}
	}
	f.hotplugged[d.Slot] = d
	return nil
}

// DetachDisk records a hot-unplug ("DetachDisk <slot>") and removes the disk at once.
func (f *Fake) DetachDisk(ctx context.Context, slot int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(fmt.Sprintf("DetachDisk %d", slot))
	delete(f.hotplugged, slot)
	return nil
}

// HotplugDisks returns the hot-plugged disks the fake has, by slot.
func (f *Fake) HotplugDisks() map[int]HotplugDisk {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int]HotplugDisk{}
	for k, v := range f.hotplugged {
		out[k] = v
	}
	return out
}
