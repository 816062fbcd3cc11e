package launcher

// Simulated launchers: RunSimulated is Run around an in-memory hypervisor.Fake
// instead of QEMU, so that one process can host thousands of VMs for scale
// tests of the control plane.

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// SimNet connects the simulated launchers of one process: an outgoing migration to a URI
// reaches the simulated target that listens there.
//
// A target's URI is "tcp:<migration address>:<port>" with a port that no other
// simulated target of this SimNet listens on; no socket is opened. A URI that
// no target listens on refuses the migration, like a closed port. The zero
// value is ready to use.
type SimNet struct {
	mu        sync.Mutex
	listeners map[string]*simVM // incoming URI → the target waiting there
	next      map[string]int    // host → the next port to try
}

// NewSimNet returns an empty SimNet.
func NewSimNet() *SimNet { return &SimNet{} }

// defaultSimNet connects the simulated launchers whose SimOptions.Net is nil.
var defaultSimNet = NewSimNet()

// The ports handed out to simulated targets.
const simFirstPort, simLastPort = 1024, 65535

// listen registers v as the target waiting on a free port of host.
func (n *SimNet) listen(host string, v *simVM) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listeners == nil {
		n.listeners, n.next = map[string]*simVM{}, map[string]int{}
	}
	port := n.next[host]
	for range simLastPort - simFirstPort + 1 {
		if port < simFirstPort || port > simLastPort {
			port = simFirstPort
		}
		uri := "tcp:" + net.JoinHostPort(host, strconv.Itoa(port))
		port++
		if _, taken := n.listeners[uri]; !taken {
			n.listeners[uri] = v
			n.next[host] = port
			return uri, nil
		}
	}
	return "", fmt.Errorf("migration address %s: every simulated port is taken", host)
}

// unlisten removes v's registration on uri, if it still listens there.
func (n *SimNet) unlisten(uri string, v *simVM) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.listeners[uri] == v {
		delete(n.listeners, uri)
	}
}

// connect takes the target listening on uri, nil if none (connection
// refused). Like QEMU, a target accepts one stream: it stops listening then.
func (n *SimNet) connect(uri string) *simVM {
	n.mu.Lock()
	v := n.listeners[uri]
	delete(n.listeners, uri)
	n.mu.Unlock()
	if v == nil {
		return nil
	}
	select {
	case <-v.Done():
		return nil
	default:
		return v
	}
}

// SimOptions tune simulated VMs.
type SimOptions struct {
	// Net connects the simulated launchers that migrate to each other; nil
	// means one SimNet shared by the whole process.
	Net *SimNet
	// MigrationTime is how long a simulated migration takes from the
	// migrate command to completion (default 200ms); the guest pauses for
	// Downtime (default 20ms) at its end.
	MigrationTime, Downtime time.Duration
	// HeartbeatInterval is how often the simulated guest "prints" a
	// heartbeat (default 1s); it is booted at once.
	HeartbeatInterval time.Duration
	// OnGuest, if set, is told each time a simulated guest starts or stops
	// running (booted, resumed after a migration, paused for a switchover,
	// powered off, killed): vm is the VM's "namespace/name", instance its run
	// directory. It is called with the VM's locks held and must be quick.
	OnGuest func(vm, instance string, running bool)
}

func (so SimOptions) withDefaults() SimOptions {
	if so.Net == nil {
		so.Net = defaultSimNet
	}
	if so.MigrationTime <= 0 {
		so.MigrationTime = 200 * time.Millisecond
	}
	if so.Downtime <= 0 {
		so.Downtime = 20 * time.Millisecond
	}
	if so.HeartbeatInterval <= 0 {
		so.HeartbeatInterval = time.Second
	}
	return so
}

// SimAccel is Status.Accel of a simulated VM.
const SimAccel = "sim"

// RunSimulated is Run with an in-memory hypervisor instead of QEMU: no
// process and no disk is opened (disk paths are only checked for being
// non-empty), no NIC (Options.IP is ignored), no disk lease (FencingToken is
// ignored). Everything else is Run's: the launcher.sock API, exit codes, the
// termination message in RunDir, the final migration status file, stop on
// ctx cancel (a graceful stop: the fake powers off), incoming migrations
// (Options.Incoming: the target registers its incoming URI with Net; when a
// source migrates to that URI, after MigrationTime the source reports
// completed and the target runs — the target's heartbeat continues from the
// source's counter, like a real guest's).
//
// A migration to a URI nobody listens on fails as QEMU's does (the migrate
// command is accepted, then the migration fails with "Connection refused");
// the guest keeps running on the source. A target that stops before the
// migration completed makes the source's migration fail; a source that
// cancels it makes the target exit ExitQEMUDied ("incoming migration
// failed"), as the real ones do. The guest "prints" heartbeats while it runs
// (not while it waits for an incoming migration, nor during the switchover).
//
// Per VM, RunSimulated's own goroutine and the launcher.sock server's are all
// that run while nothing happens (heartbeats are timer callbacks); a target
// adds one while it waits for its migration, a migrating source two.
func RunSimulated(ctx context.Context, o Options, log io.Writer, so SimOptions) int {
	so = so.withDefaults()
	return run(ctx, o, log, backend{
		start: func(ctx, _ context.Context, cfg hypervisor.Config) (*startedVM, error) {
			return startSim(ctx, cfg, so)
		},
		incoming: func(ctx context.Context, v vm, addr string, _ *hypervisor.MigrationTLS) (string, error) {
			return v.(*simVM).listen(ctx, addr)
		},
	})
}

// simVM is a simulated VM: a hypervisor.Fake whose migrations reach other
// simulated VMs through a SimNet, and whose guest prints heartbeats.
type simVM struct {
	*hypervisor.Fake
	so       SimOptions
	memBytes int64

	mu        sync.Mutex
	closed    bool          // run is done with it: no more heartbeats or migrations
	beat      *time.Timer   // the next heartbeat
	listening string        // the URI it is registered on in so.Net, "" if none
	out       *simMigration // the current or last outgoing migration
	drivers   sync.WaitGroup
}

// simMigration is one outgoing migration; its fields are guarded by the
// source's mu.
type simMigration struct {
	uri       string
	dst       *simVM // nil: the connection was refused
	status    string // "active", "device" (the switchover), "completed", "failed", "cancelled"
	err       string
	total     int64 // RAM bytes
	started   time.Time
	paused    time.Time // the switchover began
	ended     time.Time
	cancelled chan struct{} // closed by CancelMigration
}

func startSim(ctx context.Context, cfg hypervisor.Config, so SimOptions) (*startedVM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &simVM{Fake: hypervisor.NewFake(cfg), so: so, memBytes: cfg.MemoryKiB << 10}
	if so.OnGuest != nil {
		s.OnRun = func(running bool) { so.OnGuest(cfg.Name, cfg.RunDir, running) }
		if !cfg.Incoming {
			so.OnGuest(cfg.Name, cfg.RunDir, true)
		}
	}
	if !cfg.Incoming {
		s.Tick() // booted at once
	}
	s.mu.Lock()
	s.beat = time.AfterFunc(so.HeartbeatInterval, s.heartbeat)
	s.mu.Unlock()
	return &startedVM{vm: s, hb: s, accel: SimAccel, cleanup: s.close}, nil
}

// heartbeat is the guest printing a heartbeat line, if it runs; it rearms
// itself until the VM exits.
func (s *simVM) heartbeat() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case <-s.Done():
		return
	default:
	}
	// Under s.mu: a migration's switchover changes the state under it too, so
	// no beat slips in after the target took the counter over.
	if state, err := s.Status(context.Background()); err == nil && state == "running" {
		s.Tick()
	}
	s.beat.Reset(s.so.HeartbeatInterval)
}

// close ends the heartbeats and the registration in so.Net and waits for
// the migration drivers; run calls it once the VM has exited.
func (s *simVM) close() {
	s.mu.Lock()
	s.closed = true
	s.beat.Stop()
	uri := s.listening
	s.listening = ""
	s.mu.Unlock()
	if uri != "" {
		s.so.Net.unlisten(uri, s)
	}
	s.drivers.Wait()
}

// listen makes the target wait for the migration stream on a free
// simulated port of addr.
func (s *simVM) listen(ctx context.Context, addr string) (string, error) {
	uri, err := s.so.Net.listen(addr, s)
	if err != nil {
		return "", err
	}
	if err := s.PrepareIncoming(ctx, uri, nil); err != nil {
		s.so.Net.unlisten(uri, s)
		return "", fmt.Errorf("migrate-incoming: %w", err)
	}
	s.mu.Lock()
	s.listening = uri
	s.mu.Unlock()
	return uri, nil
}

// MigrateOut starts a simulated migration to the target listening on uri.
// Like QEMU's migrate, it returns before the connection is made: a refused
// one shows as a failed migration.
func (s *simVM) MigrateOut(ctx context.Context, uri string, p hypervisor.MigrationParams) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.Done():
		return fmt.Errorf("qmp migrate: %w", hypervisor.ErrQMPClosed)
	default:
	}
	if s.closed {
		return fmt.Errorf("qmp migrate: %w", hypervisor.ErrQMPClosed)
	}
	m := &simMigration{uri: uri, status: "active", total: s.memBytes, started: time.Now(), cancelled: make(chan struct{})}
	s.out = m
	if m.dst = s.so.Net.connect(uri); m.dst == nil {
		m.status, m.ended = "failed", m.started
		m.err = fmt.Sprintf("Failed to connect to '%s': Connection refused", strings.TrimPrefix(uri, "tcp:"))
		return nil
	}
	s.drivers.Add(1)
	go s.drive(m)
	return nil
}

// drive runs migration m to its end: the copy, the switchover pause, then
// the target runs with the source's heartbeat counter.
func (s *simVM) drive(m *simMigration) {
	defer s.drivers.Done()
	t := time.NewTimer(max(s.so.MigrationTime-s.so.Downtime, 0))
	defer t.Stop()
	for phase := "active"; ; phase = "device" {
		select {
		case <-t.C:
		case <-m.cancelled:
			m.dst.streamBroke()
			return
		case <-s.Done(): // the source died
			m.dst.streamBroke()
			return
		case <-m.dst.Done():
			s.failMigration(m, "Unable to write to socket: Broken pipe")
			return
		}
		s.mu.Lock()
		if m.status != phase { // cancelled meanwhile
			s.mu.Unlock()
			m.dst.streamBroke()
			return
		}
		select {
		case <-m.dst.Done():
			s.mu.Unlock()
			s.failMigration(m, "Unable to write to socket: Broken pipe")
			return
		default:
		}
		if phase == "active" {
			m.status, m.paused = "device", time.Now()
			s.SetStatus("finish-migrate")
			s.mu.Unlock()
			t.Reset(s.so.Downtime)
			continue
		}
		n, at, _ := s.Heartbeat()
		m.dst.SetHeartbeat(n, at)
		m.dst.FinishIncoming()
		m.status, m.ended = "completed", time.Now()
		s.SetStatus("postmigrate")
		s.mu.Unlock()
		return
	}
}

// failMigration ends m as failed; the guest runs on.
func (s *simVM) failMigration(m *simMigration, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.status != "active" && m.status != "device" {
		return
	}
	s.resumeAfter(m)
	m.status, m.err, m.ended = "failed", reason, time.Now()
}

// resumeAfter restarts the source's vCPUs if m's switchover had stopped them,
// as QEMU does after a failed or cancelled migration. s.mu is held.
func (s *simVM) resumeAfter(m *simMigration) {
	if m.status != "device" {
		return
	}
	select {
	case <-s.Done():
	default:
		s.SetStatus("running")
	}
}

// streamBroke is a target whose incoming stream broke off: QEMU exits with an
// error. It does nothing to a target that already exited.
func (s *simVM) streamBroke() {
	s.Crash("exit status 1: load of migration failed: Input/output error")
}

// CancelMigration cancels the outgoing migration; the guest keeps running.
func (s *simVM) CancelMigration(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.Done():
		return fmt.Errorf("qmp migrate_cancel: %w", hypervisor.ErrQMPClosed)
	default:
	}
	m := s.out
	if m == nil || (m.status != "active" && m.status != "device") {
		return nil
	}
	s.resumeAfter(m)
	m.status, m.ended = "cancelled", time.Now()
	close(m.cancelled)
	return nil
}

// MigrationStatus reports the outgoing migration (progress grows linearly
// over the copy); without one, the fake's.
func (s *simVM) MigrationStatus(ctx context.Context) (hypervisor.MigrationInfo, error) {
	info, err := s.Fake.MigrationStatus(ctx)
	if err != nil {
		return info, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return info, nil
	}
	return s.out.info(time.Now(), s.so), nil
}

func (m *simMigration) info(now time.Time, so SimOptions) hypervisor.MigrationInfo {
	in := hypervisor.MigrationInfo{Status: m.status, Error: m.err}
	switch m.status {
	case "active", "device":
		sent := m.total
		if copyTime := so.MigrationTime - so.Downtime; m.status == "active" && copyTime > 0 {
			if el := now.Sub(m.started); el < copyTime {
				sent = int64(float64(m.total) * float64(el) / float64(copyTime))
			}
		}
		in.TotalTime, in.ExpectedDowntime = now.Sub(m.started), so.Downtime
		in.RAMTotal, in.RAMTransferred, in.RAMRemaining = m.total, sent, m.total-sent
	case "completed":
		in.TotalTime, in.Downtime = m.ended.Sub(m.started), m.ended.Sub(m.paused)
		in.RAMTotal, in.RAMTransferred = m.total, m.total
	default: // failed, cancelled: QEMU keeps no counters
		in.TotalTime = m.ended.Sub(m.started)
	}
	return in
}
