package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"time"
)

// ExitError describes QEMU ending on its own (crash, signal, error exit).
type ExitError struct {
	State  string // e.g. "exit status 1", "signal: killed"
	Reason string // QMP SHUTDOWN reason, if any
	Stderr string // tail of QEMU's stderr
}

func (e *ExitError) Error() string {
	msg := "qemu died: " + e.State
	if e.Reason != "" {
		msg += " (shutdown reason " + e.Reason + ")"
	}
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Args returns the QEMU command line (without the binary).
func (inst *Instance) Args() []string { return inst.cmd.Args[1:] }

// Accel returns the accelerator in use ("kvm" or "tcg").
func (inst *Instance) Accel() string { return inst.accel }

// CPUNote says how the guest's CPU differs from Config.CPU ("": it does not): a host CPU
// without KVM runs as TCGHostModel.
func (inst *Instance) CPUNote() string {
	_, note := cpuArg(inst.cfg.CPU, inst.accel)
	return note
}

// PID returns the QEMU process id.
func (inst *Instance) PID() int { return inst.cmd.Process.Pid }

// RunDir returns Config.RunDir.
func (inst *Instance) RunDir() string { return inst.cfg.RunDir }

// QMP returns the monitor client.
func (inst *Instance) QMP() *QMPClient { return inst.qmp }

// Done is closed when the QEMU process has exited.
func (inst *Instance) Done() <-chan struct{} { return inst.done }

// Status returns the QMP run state: "running", "paused", "inmigrate",
// "postmigrate", "shutdown", ...
func (inst *Instance) Status(ctx context.Context) (string, error) {
	var st struct {
		Status string `json:"status"`
	}
	if err := inst.qmp.Execute(ctx, "query-status", nil, &st); err != nil {
		return "", err
	}
	return st.Status, nil
}

// Fault returns the evidence that the guest cannot run, if QEMU reported any: a guest
// panic (GUEST_PANICKED) or a disk I/O error that paused it (BLOCK_IO_ERROR). nil otherwise.
func (inst *Instance) Fault() *Fault {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.fault == nil {
		return nil
	}
	f := *inst.fault
	return &f
}

// Shutdown asks the guest to power off (ACPI system_powerdown) and waits up
// to grace for QEMU to exit, then sends QMP quit, then kills it. A VM that
// is not running (paused, inmigrate, postmigrate) is quit directly.
func (inst *Instance) Shutdown(ctx context.Context, grace time.Duration) error {
	inst.markRequested()
	select {
	case <-inst.done:
		return nil
	default:
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := inst.Status(qctx)
	cancel()
	if err == nil && st == "running" {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = inst.qmp.Execute(qctx, "system_powerdown", nil, nil)
		cancel()
		if err == nil {
			inst.mu.Lock()
			inst.powerdown = true
			inst.mu.Unlock()
		}
		if err == nil && inst.pressPowerButton(ctx, grace) {
			return nil
		}
	}
	qctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	inst.qmp.Execute(qctx, "quit", nil, nil)
	cancel()
	if inst.waitDone(ctx, 5*time.Second) {
		return nil
	}
	inst.Kill()
	<-inst.done
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("hypervisor: qemu did not quit, killed")
}

// powerButtonRepeat is how often the ACPI power button is pressed again while a guest has
// not powered off: a press before the guest's ACPI handling is up (early in its boot) is
// lost, and the platform no longer waits for a guest to say it booted.
const powerButtonRepeat = 5 * time.Second

// pressPowerButton waits up to grace for QEMU to exit, pressing the power button again every
// powerButtonRepeat. It tells whether QEMU exited.
func (inst *Instance) pressPowerButton(ctx context.Context, grace time.Duration) bool {
	deadline := time.Now().Add(grace)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		if inst.waitDone(ctx, min(left, powerButtonRepeat)) {
			return true
		}
		if ctx.Err() != nil || time.Until(deadline) <= 0 {
			return false
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		inst.qmp.Execute(qctx, "system_powerdown", nil, nil)
		cancel()
	}
}

func (inst *Instance) waitDone(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-inst.done:
		return true
	case <-ctx.Done():
		return false
	case <-t.C:
		return false
	}
}

func (inst *Instance) markRequested() {
	inst.mu.Lock()
	inst.requested = true
	inst.mu.Unlock()
}

// Kill sends SIGKILL to QEMU. Wait then reports no error.
func (inst *Instance) Kill() {
	inst.markRequested()
	select {
	case <-inst.done:
	default:
		inst.cmd.Process.Kill()
	}
}

// Wait blocks until QEMU exits. guestShutdown is true when the guest powered
// itself off or honoured a powerdown request. err is nil when the exit was
// caused by the guest or by a request made through this Instance (Shutdown,
// Kill); otherwise it is an *ExitError (crash, signal, error exit, external
// SIGTERM).
func (inst *Instance) Wait() (guestShutdown bool, err error) {
	<-inst.done
	if inst.qmp != nil {
		// Let the reader drain events QEMU sent before exiting (SHUTDOWN).
		select {
		case <-inst.qmp.Done():
		case <-time.After(2 * time.Second):
		}
		inst.qmp.Close()
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	clean := inst.waitErr == nil && inst.exitState != nil && inst.exitState.Success()
	switch {
	case clean && inst.guestShutdown:
		return true, nil
	case clean && inst.powerdown && inst.hostShutdown == "":
		return true, nil
	case inst.requested:
		return false, nil
	}
	state := "unknown"
	if inst.exitState != nil {
		state = inst.exitState.String()
	} else if inst.waitErr != nil {
		state = inst.waitErr.Error()
	}
	return false, &ExitError{State: state, Reason: inst.hostShutdown, Stderr: inst.errs.String()}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(bytes.TrimSpace(t.buf))
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

type teeWriter struct {
	a, b interface{ Write([]byte) (int, error) }
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.b.Write(p)
	return w.a.Write(p)
}
