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

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Exit codes of Run.
const (
	ExitStopped   = 0 // guest powered off, or stopped on request
	ExitNoStart   = 1 // VM could not be started (bad options, broken disk, ...)
	ExitQEMUDied  = 2 // QEMU died unexpectedly (crash, killed)
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

	mu       sync.Mutex
	stopping bool
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
	fmt.Fprintf(l.w, "%s launcher: %s\n", time.Now().UTC().Format(time.RFC3339), msg)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Run is the body of "ferry launcher": it starts the VM's QEMU, serves the
// launcher API on RunDir/launcher.sock and returns when QEMU is gone.
//
// Cancel ctx (SIGTERM) for a graceful stop: ACPI powerdown with a 10 s
// grace, then quit/kill. Exit codes: 0 the guest powered off (by itself or
// on request), 1 the VM could not start, 2 QEMU died unexpectedly. For 1
// and 2 a one-line reason goes to log and to RunDir/termination-message.
func Run(ctx context.Context, o Options, log io.Writer) (exitCode int) {
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
	cfg := hypervisor.Config{Name: name, CPUs: o.CPUs, MemoryKiB: kib, RunDir: o.RunDir, Incoming: o.Incoming}
	for _, d := range o.Disks {
		disk, err := parseDisk(d)
		if err != nil {
			return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
		}
		cfg.Disks = append(cfg.Disks, disk)
	}

	startCtx, cancelStart := context.WithTimeout(ctx, 2*time.Minute)
	inst, err := hypervisor.Start(startCtx, cfg)
	cancelStart()
	if err != nil {
		if ctx.Err() != nil {
			lg.printf("stopped before VM %s started", name)
			return ExitStopped
		}
		return fail(ExitNoStart, "cannot start VM %s: %v", name, err)
	}
	lg.printf("VM %s: qemu pid %d (%s, %d KiB, %d vCPU)", name, inst.PID(), inst.Accel(), kib, max(o.CPUs, 1))

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	follower := hypervisor.FollowSerial(runCtx, filepath.Join(o.RunDir, hypervisor.SerialLogName), 250*time.Millisecond)
	l := &launcher{o: o, vm: inst, hb: follower, accel: inst.Accel(), log: lg, stop: make(chan string, 1)}

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
	if code != ExitStopped {
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
		if err != nil {
			return ExitQEMUDied, err.Error()
		}
		if guest {
			return ExitStopped, "guest powered off"
		}
		return ExitStopped, "qemu exited"
	case <-ctx.Done():
		reason = "termination signal"
	case reason = <-l.stop:
	}
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.log.printf("stopping VM (%s): ACPI powerdown, %v grace", reason, ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace+15*time.Second)
	defer cancel()
	if err := l.vm.Shutdown(sctx, ShutdownGrace); err != nil {
		l.log.printf("shutdown: %v", err)
	}
	guest, err := l.vm.Wait()
	switch {
	case err != nil:
		// Died on its own while we were stopping it; still a requested stop.
		return ExitStopped, fmt.Sprintf("stopped on request (%s); qemu: %v", reason, err)
	case guest:
		return ExitStopped, fmt.Sprintf("guest powered off on request (%s)", reason)
	default:
		return ExitStopped, fmt.Sprintf("stopped on request (%s); guest did not power off in time", reason)
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
