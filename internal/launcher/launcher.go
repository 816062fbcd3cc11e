package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ferryvm/ferry/internal/disklease"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Exit codes of Run.
const (
	ExitStopped    = 0 // guest powered off, or stopped on request
	ExitNoStart    = 1 // VM could not be started (bad options, broken disk, ...)
	ExitQEMUDied   = 2 // QEMU died unexpectedly (crash, killed)
	ExitMigrated   = 3 // v1alpha2.LauncherExitMigrated: the VM live-migrated away; the guest runs on the target
	ExitSuperseded = 4 // v1alpha2.LauncherExitSuperseded: a newer instance holds the VM's disk lease; this one was fenced
	// ShutdownGrace is how long a guest has to power off when stopped, unless
	// Options.ShutdownGrace says otherwise.
	ShutdownGrace = 10 * time.Second
)

// File names inside Options.RunDir.
const (
	SocketName             = "launcher.sock"
	TerminationMessageName = "termination-message"
)

// vm is what the launcher needs from a running VM; *hypervisor.Instance and
// *hypervisor.Fake both satisfy it.
type vm interface {
	PID() int
	Done() <-chan struct{}
	Status(ctx context.Context) (string, error)
	Shutdown(ctx context.Context, grace time.Duration) error
	Wait() (guestShutdown bool, err error)
	Kill()
	PrepareIncoming(ctx context.Context, uri string, tls *hypervisor.MigrationTLS) error
	MigrateOut(ctx context.Context, uri string, p hypervisor.MigrationParams) error
	MigrationStatus(ctx context.Context) (hypervisor.MigrationInfo, error)
	CancelMigration(ctx context.Context) error
	Resume(ctx context.Context) error
	// Fault is QEMU's evidence that the guest cannot run (panic, I/O error), or nil.
	Fault() *hypervisor.Fault
}

// heartbeats is satisfied by *hypervisor.SerialFollower and *hypervisor.Fake.
type heartbeats interface {
	Heartbeat() (n int64, at time.Time, ok bool)
	Booted() bool
}

type launcher struct {
	o     Options
	vm    vm
	hb    heartbeats
	accel string
	log   *logger
	stop  chan string // stop requests (reason), buffered
	// memoryKiB is the guest RAM handed to QEMU.
	memoryKiB int64
	// incomingURI is where a target waits for the migration stream.
	incomingURI string
	// migrated receives the URI once an outgoing migration completed.
	migrated chan string
	// leasePath is the disk lease a migration target takes over ("" for none).
	leasePath string
	// fence keeps the disk lease; nil runs without one.
	fence *fencing
	// net is the VM's NIC on this node; nil without one.
	net *network
	// tlsDir is the node's migration credentials directory: migrations are TLS ("": plain).
	tlsDir string
	// agent follows the QEMU guest agent; nil for a VM without one (simulated).
	agent *agentWatch
	// hp is the VM's hot-plugged disks (blockdevices.go); nil: it hot-plugs none.
	hp *hotplug

	mu         sync.Mutex
	stopping   bool
	migratedIn bool             // the incoming migration completed
	mig        *migrationRun    // current or last outgoing migration
	migStatus  *MigrationStatus // its last known status
}

func newLauncher(o Options, v vm, hb heartbeats, lg *logger) *launcher {
	return &launcher{o: o, vm: v, hb: hb, log: lg, stop: make(chan string, 1), migrated: make(chan string, 1)}
}

type logger struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *logger) printf(format string, args ...any) {
	if l.w == nil {
		return
	}
	msg := oneLine(fmt.Sprintf(format, args...))
	l.mu.Lock()
	defer l.mu.Unlock()
	// Milliseconds: a migration's switchover is read from these lines.
	fmt.Fprintf(l.w, "%s launcher: %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"), msg)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Run is the body of ferry-launcher: it starts the VM's QEMU, serves the
// launcher API on RunDir/launcher.sock and returns when QEMU is gone.
//
// Cancel ctx (SIGTERM) for a graceful stop: ACPI powerdown with a 10 s
// grace, then quit/kill (an outgoing migration is cancelled first). Exit
// codes: 0 the guest powered off (by itself or on request), 1 the VM could
// not start, 2 QEMU died unexpectedly, 3 the VM migrated away, 4 a newer
// instance holds the VM's disk lease (ExitSuperseded: this one was fenced, its
// QEMU killed at once or never started). A one-line outcome goes to log and to
// RunDir/termination-message ("migrated to URI: ..." for 3, "... this instance
// was fenced" for 4).
//
// With Options.Incoming QEMU waits for an incoming migration on a free port
// of the migration address (Status.IncomingURI) and runs the guest once it
// arrived.
//
// With Options.FencingToken a cold start first acquires the disk lease
// (package disklease; waiting one TTL if an older instance may still run) and
// a migration target takes it over once the guest runs on it; the lease is
// renewed until QEMU is gone and then released.
func Run(ctx context.Context, o Options, log io.Writer) (exitCode int) {
	return run(ctx, o, log, qemuBackend)
}

// backend is what run starts the VM with: QEMU (Run) or an in-memory fake
// (RunSimulated).
type backend struct {
	// node says the VM uses the node's resources: the disk lease
	// (Options.FencingToken) and a NIC (Options.IP). Without, both are ignored.
	node bool
	// start starts the VM for cfg. ctx bounds the start; runCtx ends when
	// run returns, for helpers such as the serial follower.
	start func(ctx, runCtx context.Context, cfg hypervisor.Config) (*startedVM, error)
	// incoming makes v (started Incoming) wait for the migration stream on
	// addr (over TLS with tls) and returns the URI.
	incoming func(ctx context.Context, v vm, addr string, tls *hypervisor.MigrationTLS) (string, error)
}

// startedVM is a VM as its backend started it.
type startedVM struct {
	vm    vm
	hb    heartbeats
	accel string
	// cpuNote says how the guest's CPU differs from the one asked for ("": it does not).
	cpuNote string
	// events subscribes to QMP events (nil: the VM has none).
	events func(func(hypervisor.Event)) (remove func())
	// cleanup, if set, runs once run is done with the VM (it has exited).
	cleanup func()
	// agentSocket is the guest agent channel's socket ("": the VM has none).
	agentSocket string
}

var qemuBackend = backend{node: true, start: startQEMU, incoming: prepareIncoming}

func startQEMU(ctx, runCtx context.Context, cfg hypervisor.Config) (*startedVM, error) {
	inst, err := hypervisor.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &startedVM{
		vm:          inst,
		hb:          hypervisor.FollowSerial(runCtx, filepath.Join(cfg.RunDir, hypervisor.SerialLogName), 250*time.Millisecond),
		accel:       inst.Accel(),
		cpuNote:     inst.CPUNote(),
		events:      inst.QMP().AddEventHandler,
		agentSocket: filepath.Join(cfg.RunDir, hypervisor.GuestAgentSocketName),
	}, nil
}

// run is Run's body with the VM started by b.
func run(ctx context.Context, o Options, log io.Writer, b backend) (exitCode int) {
	lg := &logger{w: log}
	if o.RunDir == "" {
		lg.printf("cannot start VM: no run directory")
		return ExitNoStart
	}
	fail := func(code int, format string, args ...any) int {
		msg := oneLine(fmt.Sprintf(format, args...))
		lg.printf("%s", msg)
		writeTermination(o.RunDir, msg)
		return code
	}
	if err := os.MkdirAll(o.RunDir, 0o750); err != nil {
		lg.printf("cannot start VM: %v", err)
		return ExitNoStart
	}
	os.Remove(filepath.Join(o.RunDir, TerminationMessageName))
	name := o.VMName
	if o.Namespace != "" {
		name = o.Namespace + "/" + o.VMName
	}

	kib, err := memoryKiB(o.Memory)
	if err != nil {
		return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
	}
	if len(o.Disks) == 0 {
		return fail(ExitNoStart, "cannot start VM %s: no disk", name)
	}
	machine, err := o.machine()
	if err != nil {
		return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
	}
	if machine.Firmware == hypervisor.FirmwareEFISecureBoot {
		// OVMF's SMM build on q35 page-faults at start unless the RAM is whole MiB
		// (measured with Debian's ovmf 2022.11 under QEMU 7.2: 262136K, 262080K and
		// 261888K fault, 256M boots), so SafeMemoryKiB's odd size cannot be used: such a
		// VM migrating under TCG is open to the dirty-bitmap bug it avoids.
		kib = (kib + 1023) / 1024 * 1024
	}
	cfg := hypervisor.Config{Name: name, CPUs: o.CPUs, MemoryKiB: kib, RunDir: o.RunDir, Incoming: o.Incoming, Machine: machine}
	if cfg.CPU, err = hypervisor.ParseCPU(o.CPUModel, o.CPUFeatures); err != nil {
		return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
	}
	for _, d := range o.Disks {
		disk, err := parseDisk(d)
		if err != nil {
			return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
		}
		cfg.Disks = append(cfg.Disks, disk)
	}
	hotplugged, err := startHotplugged(o, &cfg, b.node)
	if err != nil {
		return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
	}

	runCtx, cancelRun := context.WithCancel(context.Background())
	fence := &fencing{log: lg}
	defer func() {
		cancelRun()
		fence.release() // QEMU is gone: the next start need not wait
	}()
	leasePath := ""
	if b.node {
		leasePath = leaseFile(o, cfg.Disks)
	}
	if leasePath != "" && !o.Incoming {
		lease, err := disklease.Acquire(ctx, leasePath, o.FencingToken, leaseHolder(o), leaseNode(), o.LeaseTTL, lg.printf)
		var newer *disklease.SupersededError
		switch {
		case errors.As(err, &newer):
			return fail(ExitSuperseded, "VM %s not started: %v; this instance was fenced", name, err)
		case err != nil && ctx.Err() != nil:
			lg.printf("stopped before VM %s started", name)
			return ExitStopped
		case err != nil:
			return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
		}
		fence.start(runCtx, lease)
	}

	var nw *network
	if b.node {
		if nw, err = openNetwork(o, lg); err != nil {
			return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
		}
	}
	// Deferred in this order, they run the other way round: the address given up first,
	// then the tap's guard, once QEMU is gone (the source of a migration too, as it exits).
	defer nw.release()
	defer nw.detach("the VM stopped")
	cfg.NICs = nw.qemuNIC()
	if !o.Incoming {
		// Before QEMU runs: nothing else holds the address (a fenced or stopped instance
		// is gone), and the guest's first ARP and DHCP find it routed here.
		nw.attach("cold start")
	}

	tlsDir := ""
	if b.node {
		tlsDir = migrationTLSDir(o)
	}
	var incomingTLS *hypervisor.MigrationTLS
	cleanupTLS := func() {}
	if o.IncomingFrom != "" && len(validation.IsDNS1123Subdomain(o.IncomingFrom)) > 0 {
		return fail(ExitNoStart, "cannot start VM %s as a migration target: --incoming-from %q is not a node name", name, o.IncomingFrom)
	}
	if o.Incoming && tlsDir != "" {
		// Checked before QEMU starts: a node that cannot take the stream encrypted refuses
		// it at once, and the guest stays where it runs.
		stage, cleanup, err := stageTLS(tlsDir, o.RunDir, os.Getenv("FERRY_NODE_NAME"), time.Now())
		if err != nil {
			return fail(ExitNoStart, "cannot start VM %s as a migration target: %v", name, err)
		}
		// QEMU reads the staged credentials in PrepareIncoming; the copy goes then.
		cleanupTLS = sync.OnceFunc(cleanup)
		defer cleanupTLS()
		incomingTLS = &hypervisor.MigrationTLS{Dir: stage, AllowedPeers: []string{allowedSource(o.IncomingFrom)}}
	}

	startCtx, cancelStart := context.WithTimeout(ctx, 2*time.Minute)
	st, err := b.start(startCtx, runCtx, cfg)
	cancelStart()
	if nw != nil {
		// QEMU holds the tap now; it goes when QEMU does.
		nw.tap.CloseFile()
	}
	if err != nil {
		if ctx.Err() != nil {
			lg.printf("stopped before VM %s started", name)
			return ExitStopped
		}
		return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
	}
	if st.cleanup != nil {
		defer st.cleanup()
	}
	inst := st.vm
	if !fence.attach(inst) {
		inst.Wait()
		return fail(ExitSuperseded, "VM %s: %s", name, fence.fencedBy())
	}
	lg.printf("VM %s: qemu pid %d (%s, %d KiB, %d vCPU)", name, inst.PID(), st.accel, kib, max(o.CPUs, 1))
	if st.cpuNote != "" {
		lg.printf("VM %s: %s", name, st.cpuNote)
	}

	l := newLauncher(o, inst, st.hb, lg)
	l.accel, l.memoryKiB = st.accel, kib
	l.leasePath, l.fence, l.net, l.tlsDir = leasePath, fence, nw, tlsDir
	l.hp = newHotplug(o.HotplugRoot, hotplugged, b.node)
	l.hp.startWorker = sync.OnceFunc(func() { go l.runHotplug(runCtx) })
	go nw.serveDHCP(runCtx)
	if st.agentSocket != "" {
		l.agent = &agentWatch{socket: st.agentSocket}
		go l.agent.run(runCtx, lg)
	}
	if o.Incoming {
		uri, err := b.incoming(ctx, inst, migrationAddress(o), incomingTLS)
		cleanupTLS()
		if err != nil {
			inst.Kill()
			inst.Wait()
			if ctx.Err() != nil {
				lg.printf("stopped before VM %s was ready for the incoming migration", name)
				return ExitStopped
			}
			return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
		}
		l.incomingURI = uri
		lg.printf("VM %s: waiting for the incoming migration on %s (%s)", name, uri, incomingTLS.Describe())
		go l.watchIncoming(runCtx)
	}
	if nw != nil && st.events != nil {
		remove := st.events(l.onEvent)
		defer remove()
	}

	sock := filepath.Join(o.RunDir, SocketName)
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		inst.Kill()
		inst.Wait()
		return fail(ExitNoStart, "cannot start VM %s: launcher socket: %v", name, err)
	}
	srv := &http.Server{Handler: l.handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(sctx)
		cancel()
		os.Remove(sock)
	}()

	code, msg := l.loop(ctx)
	if code != ExitStopped && code != ExitMigrated {
		return fail(code, "VM %s: %s", name, msg)
	}
	lg.printf("VM %s: %s", name, msg)
	writeTermination(o.RunDir, msg)
	return code
}

// requestStop asks the loop to stop the VM gracefully; it is idempotent.
func (l *launcher) requestStop(reason string) {
	select {
	case l.stop <- reason:
	default:
	}
}

func (l *launcher) isStopping() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}

// loop waits for QEMU to exit or a stop request and returns the exit code
// and a one-line outcome.
func (l *launcher) loop(ctx context.Context) (int, string) {
	var reason string
	select {
	case <-l.vm.Done():
		guest, err := l.vm.Wait()
		if why := l.fence.fencedBy(); why != "" {
			return ExitSuperseded, why
		}
		if err != nil {
			if l.incomingURI != "" && !l.incomingDone("") {
				return ExitQEMUDied, "incoming migration failed: " + err.Error()
			}
			return ExitQEMUDied, err.Error()
		}
		if guest {
			return ExitStopped, "guest powered off"
		}
		return ExitStopped, "qemu exited"
	case <-ctx.Done():
		reason = "termination signal"
	case reason = <-l.stop:
	case uri := <-l.migrated:
		return l.quitMigrated(uri)
	}
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	if l.cancelActiveMigration(30 * time.Second) {
		l.mu.Lock()
		uri := l.mig.uri
		l.mu.Unlock()
		l.log.printf("the migration completed before it could be cancelled (%s)", reason)
		return l.quitMigrated(uri)
	}
	waiting := l.incomingURI != "" && !l.incomingDone("")
	grace := l.shutdownGrace()
	l.log.printf("stopping VM (%s): ACPI powerdown, %v grace", reason, grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace+15*time.Second)
	defer cancel()
	stopAgent := l.nudgeAgent(sctx, grace/3)
	err := l.vm.Shutdown(sctx, grace)
	stopAgent()
	if err != nil {
		l.log.printf("shutdown: %v", err)
	}
	guest, err := l.vm.Wait()
	switch {
	case l.fence.fencedBy() != "":
		return ExitSuperseded, l.fence.fencedBy()
	case err != nil:
		// Died on its own while we were stopping it; still a requested stop.
		return ExitStopped, fmt.Sprintf("stopped on request (%s); qemu: %v", reason, err)
	case waiting:
		return ExitStopped, fmt.Sprintf("stopped on request (%s) before the incoming migration completed", reason)
	case guest:
		return ExitStopped, fmt.Sprintf("guest powered off on request (%s)", reason)
	default:
		return ExitStopped, fmt.Sprintf("stopped on request (%s); guest did not power off in time", reason)
	}
}

// shutdownGrace is how long the guest has to power off when the VM is stopped.
func (l *launcher) shutdownGrace() time.Duration {
	if l.o.ShutdownGrace > 0 {
		return l.o.ShutdownGrace
	}
	return ShutdownGrace
}

// nudgeAgent asks the guest agent to power the guest off if the guest has not done so after
// wait (a guest may ignore the ACPI power button: no acpid, a locked screen). The returned
// function stops the nudge once QEMU is gone.
func (l *launcher) nudgeAgent(ctx context.Context, wait time.Duration) (stop func()) {
	if l.agent == nil {
		return func() {}
	}
	t := time.AfterFunc(wait, func() {
		select {
		case <-l.vm.Done():
			return
		default:
		}
		if l.agent.shutdown(ctx) {
			l.log.printf("the guest has not powered off after %v: asked its guest agent to", wait)
		}
	})
	return func() { t.Stop() }
}

// quitMigrated quits the source QEMU (paused in "postmigrate" after the
// migration completed) and reports ExitMigrated.
func (l *launcher) quitMigrated(uri string) (int, string) {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.vm.Shutdown(ctx, ShutdownGrace); err != nil {
		l.log.printf("quitting the migrated source: %v", err)
	}
	if _, err := l.vm.Wait(); err != nil {
		l.log.printf("source qemu after the migration: %v", err)
	}
	l.saveFinalMigration()
	return ExitMigrated, l.migrationSummary(uri)
}

// incomingDone reports whether the incoming migration has completed; state
// is a freshly queried run state ("" if none), which may prove it.
func (l *launcher) incomingDone(state string) bool {
	if l.incomingURI == "" {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case "", "inmigrate", "unknown", "exited", "shutdown":
	default:
		l.migratedIn = true
	}
	return l.migratedIn
}

// watchIncoming logs when the incoming migration completed (QEMU leaves
// "inmigrate" and runs the guest).
func (l *launcher) watchIncoming(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		state, err := l.vm.Status(qctx)
		cancel()
		if err == nil && l.incomingDone(state) {
			l.log.printf("incoming migration completed; guest %s", state)
			l.net.attach("incoming migration completed") // if the RESUME event was missed
			l.takeOverLease(ctx)
			l.hp.kick() // disks asked for meanwhile may be attached now
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-l.vm.Done():
			return
		case <-t.C:
		}
	}
}

func writeTermination(runDir, msg string) {
	if runDir == "" {
		return
	}
	path := filepath.Join(runDir, TerminationMessageName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(msg+"\n"), 0o644); err == nil {
		os.Rename(tmp, path)
	}
}

// ErrNoLauncher is returned by the client helpers when no launcher listens
// in the run directory.
var ErrNoLauncher = errors.New("launcher: not running")
