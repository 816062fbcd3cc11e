package migration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/migrationtls"
)

// rawBench migrates a guest between bare QEMU processes on loopback.
type rawBench struct {
	image  string // the ferry-guest raw image
	dir    string // work directory of the scenario
	memKiB int64
	params hypervisor.MigrationParams
	// tls migrates over TLS (mutual certificate checks, as Ferry's launchers do) with a
	// CA and node certificate made for the run.
	tls      bool
	timeout  time.Duration
	say      func(string, ...any)
	serial   int // run directories made so far
	src, dst *hypervisor.Instance
	disk     string
	dirtying bool
}

func (r *rawBench) start(ctx context.Context, disk string, incoming bool) (*hypervisor.Instance, error) {
	r.serial++
	cfg := hypervisor.Config{Name: "ferry-bench-raw", CPUs: 1, MemoryKiB: r.memKiB,
		Disks:  []hypervisor.Disk{{Path: disk, Format: "qcow2"}},
		RunDir: filepath.Join(r.dir, "g"+strconv.Itoa(r.serial)), Incoming: incoming}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return hypervisor.Start(sctx, cfg)
}

func stopInstance(inst *hypervisor.Instance) {
	if inst == nil {
		return
	}
	inst.Kill()
	inst.Wait()
}

// close kills whatever QEMU is still running.
func (r *rawBench) close() {
	stopInstance(r.dst)
	stopInstance(r.src)
	r.src, r.dst = nil, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// setup boots the baseline's guest.
func (r *rawBench) setup(ctx context.Context) error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	r.disk = filepath.Join(r.dir, "disk.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", r.image, "-F", "raw", r.disk).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu-img create: %v: %s", err, out)
	}
	var err error
	if r.src, err = r.start(ctx, r.disk, false); err != nil {
		return err
	}
	return bench.WaitCounting(ctx, filepath.Join(r.src.RunDir(), hypervisor.SerialLogName), 2, 3*time.Minute)
}

// step migrates the guest once between two QEMU processes and measures it; with
// dirtyMiB > 0 the guest dirties that much memory meanwhile (started, and given warmup,
// before the first step and again after a guest that may have rebooted).
func (r *rawBench) step(ctx context.Context, dirtyMiB int, warmup time.Duration) (bench.Sample, error) {
	if dirtyMiB > 0 && !r.dirtying {
		n := strconv.Itoa(dirtyMiB)
		if err := bench.TypeLine(ctx, r.src.RunDir(), "dirty "+n, "DIRTY "+n+" STARTED"); err != nil {
			return bench.Sample{}, err
		}
		if err := bench.Sleep(ctx, warmup); err != nil {
			return bench.Sample{}, err
		}
		r.dirtying = true
	}
	s, err := r.migrateOnce(ctx, r.disk)
	if s.Outcome == bench.PostFailure {
		r.dirtying = false // the guest may have rebooted
	}
	return s, err
}

func (r *rawBench) migrateOnce(ctx context.Context, disk string) (bench.Sample, error) {
	var err error
	if r.dst, err = r.start(ctx, disk, true); err != nil {
		return bench.Sample{}, fmt.Errorf("starting the destination QEMU: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return bench.Sample{}, err
	}
	uri := "tcp:127.0.0.1:" + strconv.Itoa(port)
	params := r.params
	var in *hypervisor.MigrationTLS
	if r.tls {
		dir, err := r.credentials()
		if err != nil {
			return bench.Sample{}, err
		}
		in = &hypervisor.MigrationTLS{Dir: dir, AllowedPeers: []string{migrationtls.AllowedPeers}}
		params.TLS = &hypervisor.MigrationTLS{Dir: dir, Hostname: rawTLSNode}
	}
	if err := r.dst.PrepareIncoming(ctx, uri, in); err != nil {
		return bench.Sample{}, fmt.Errorf("migrate-incoming: %w", err)
	}
	srcF := hypervisor.NewSerialFollower(filepath.Join(r.src.RunDir(), hypervisor.SerialLogName))
	srcF.Poll()
	failed := func(format string, args ...any) (bench.Sample, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = r.src.CancelMigration(cctx)
		if st, err := r.src.Status(cctx); err == nil && st != "running" {
			_ = r.src.Resume(cctx)
		}
		stopInstance(r.dst)
		r.dst = nil
		return bench.Sample{Outcome: bench.MigrationFailed, Detail: fmt.Sprintf(format, args...)}, ctx.Err()
	}

	t0 := time.Now()
	if err := r.src.MigrateOut(ctx, uri, params); err != nil {
		return failed("migrate: %v", err)
	}
	mctx, cancel := context.WithTimeout(ctx, r.timeout)
	info, err := r.src.WaitMigration(mctx, 20*time.Millisecond)
	cancel()
	if err != nil {
		return failed("raw migration: %v (status %s, %d of %d MiB left)", err, info.Status, info.RAMRemaining>>20, info.RAMTotal>>20)
	}
	if info.Status != "completed" {
		return failed("raw migration ended %s: %s", info.Status, info.Error)
	}
	for {
		st, err := r.dst.Status(ctx)
		if err == nil && st == "running" {
			break
		}
		if time.Since(t0) > r.timeout {
			return failed("destination not running after the migration (status %q, %v)", st, err)
		}
		if err := bench.Sleep(ctx, 20*time.Millisecond); err != nil {
			return bench.Sample{}, err
		}
	}
	s := bench.Sample{E2E: time.Since(t0), Transfer: info.TotalTime, Downtime: info.Downtime, Outcome: bench.OK}
	srcF.Poll()
	last, _, _ := srcF.Heartbeat()
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	_ = r.src.Shutdown(sctx, 5*time.Second)
	cancel()
	r.src.Wait()
	r.src, r.dst = r.dst, nil
	if why := bench.HeartbeatCheck(ctx, filepath.Join(r.src.RunDir(), hypervisor.SerialLogName), last, bench.PostMigrationWindow); why != "" {
		s.Outcome, s.Detail = bench.PostFailure, "raw: "+why
	}
	return s, ctx.Err()
}

// rawTLSNode is the node name in the raw baseline's certificate.
const rawTLSNode = "raw-bench"

// credentials makes (once) a CA and a node certificate in the work directory, the same
// for both QEMU processes.
func (r *rawBench) credentials() (string, error) {
	dir := filepath.Join(r.dir, "tls")
	if _, err := migrationtls.Load(dir); err == nil {
		return dir, nil
	}
	now := time.Now()
	certPEM, keyPEM, err := migrationtls.NewCA(now)
	if err != nil {
		return "", err
	}
	ca, err := migrationtls.ParseCA(certPEM, keyPEM)
	if err != nil {
		return "", err
	}
	c, err := ca.NodeCredentials(rawTLSNode, now, migrationtls.DefaultDuration)
	if err != nil {
		return "", err
	}
	return dir, migrationtls.Write(dir, c)
}
