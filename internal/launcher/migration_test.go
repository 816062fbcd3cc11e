package launcher

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// startVM runs a launcher for o (RunDir filled in) and stops it when the
// test ends.
func startVM(t *testing.T, o Options) (*runResult, string) {
	t.Helper()
	if o.RunDir == "" {
		o.RunDir = t.TempDir()
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := startRun(ctx, o)
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(60 * time.Second):
			t.Errorf("launcher %s did not stop within 60s", o.VMName)
		}
	})
	return r, o.RunDir
}

// waitUntil polls cond every 100ms until it holds or d elapses.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// typeOnConsole types line on the guest console and waits for expect in
// the serial log.
func typeOnConsole(t *testing.T, runDir, line, expect string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out syncBuffer
	if err := hypervisor.Console(ctx, runDir, strings.NewReader(line+"\n"), &out); err != nil {
		t.Fatalf("console: %v", err)
	}
	waitUntil(t, 30*time.Second, expect+" in the serial log", func() bool {
		b, _ := os.ReadFile(filepath.Join(runDir, hypervisor.SerialLogName))
		return strings.Contains(string(b), expect)
	})
}

// lastCNT returns the last heartbeat in runDir's serial log.
func lastCNT(runDir string) int64 {
	f := hypervisor.NewSerialFollower(filepath.Join(runDir, hypervisor.SerialLogName))
	f.Poll()
	n, _, _ := f.Heartbeat()
	return n
}

func statusNow(t *testing.T, runDir string) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := StatusOf(ctx, runDir)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

var summaryRE = regexp.MustCompile(`total (\S+), downtime (\S+),`)

// guestMemory is a test guest's memory for a dirty buffer of dirtyMiB: the guest refuses
// a buffer that leaves it less than 24 MiB, and a 128 MiB guest has ~70 MiB free.
func guestMemory(dirtyMiB int) string {
	if dirtyMiB <= 32 {
		return "128Mi"
	}
	return "256Mi"
}

// migrate boots a source, optionally makes the guest dirty dirtyMiB MiB in
// a loop, starts a target on the same overlay and migrates with req (URI
// filled in). It checks the whole hand-over and returns total time and
// downtime. With tlsDirs (source's, target's) both launchers migrate over TLS.
func migrate(t *testing.T, dirtyMiB int, req MigrationRequest, tlsDirs ...string) (total, downtime time.Duration) {
	img := guestImage(t)
	disk := overlay(t, img) + ":qcow2"
	var srcTLS, dstTLS string
	if len(tlsDirs) == 2 {
		srcTLS, dstTLS = tlsDirs[0], tlsDirs[1]
	}
	mem := guestMemory(dirtyMiB)
	src, srcDir := startVM(t, Options{VMName: "mig", Namespace: "default", Memory: mem, Disks: []string{disk}, MigrationTLSDir: srcTLS})
	// A target that stays silent may have a guest that died before the switchover: its
	// last words are in the source's serial log.
	defer func() {
		if t.Failed() {
			t.Logf("source serial log (tail):\n%s", serialTail(srcDir))
		}
	}()
	pollStatus(t, src, srcDir, 90*time.Second, "source heartbeat >= 3", func(s Status) bool { return s.Heartbeat >= 3 })
	if dirtyMiB > 0 {
		n := strconv.Itoa(dirtyMiB)
		typeOnConsole(t, srcDir, "dirty "+n, "DIRTY "+n+" STARTED")
	}

	dst, dstDir := startVM(t, Options{VMName: "mig", Namespace: "default", Memory: mem, Disks: []string{disk}, Incoming: true, MigrationTLSDir: dstTLS})
	dstSt := pollStatus(t, dst, dstDir, 60*time.Second, "target incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	if dstSt.QEMU != "inmigrate" || !strings.HasPrefix(dstSt.IncomingURI, "tcp:127.0.0.1:") || dstSt.Booted {
		t.Fatalf("target status %+v", dstSt)
	}
	req.URI = dstSt.IncomingURI

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := StartMigration(ctx, srcDir, req); err != nil {
		t.Fatalf("StartMigration: %v", err)
	}
	// Follow the source until it exits, keeping the last migration status.
	var seen []string
	var maxThrottle, maxDirtyRate int64
	for done := false; !done; {
		select {
		case <-src.done:
			done = true
			continue
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(t0) > 4*time.Minute {
			t.Fatalf("source did not exit within 4 minutes; log:\n%s", src.log)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := StatusOf(ctx, srcDir)
		cancel()
		if err == nil && st.Migration != nil {
			if len(seen) == 0 || seen[len(seen)-1] != st.Migration.Status {
				seen = append(seen, st.Migration.Status)
			}
			maxThrottle = max(maxThrottle, st.Migration.ThrottlePercent)
			maxDirtyRate = max(maxDirtyRate, st.Migration.DirtyPagesRate)
			if st.Migration.Finished() && st.Migration.Status != "completed" {
				t.Fatalf("migration %s: %+v; log:\n%s", st.Migration.Status, st.Migration, src.log)
			}
		}
	}
	if src.code != ExitMigrated {
		t.Fatalf("source exit code %d, want %d; log:\n%s", src.code, ExitMigrated, src.log)
	}
	msg := TerminationMessage(srcDir)
	if !strings.HasPrefix(msg, "migrated to "+req.URI) {
		t.Errorf("termination message %q", msg)
	}
	m := summaryRE.FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("termination message %q lacks total/downtime", msg)
	}
	total, _ = time.ParseDuration(m[1])
	downtime, _ = time.ParseDuration(m[2])
	srcLast := lastCNT(srcDir)

	st := pollStatus(t, dst, dstDir, 60*time.Second, "target running with a heartbeat beyond the source's last",
		func(s Status) bool { return s.QEMU == "running" && s.Heartbeat > srcLast })
	if st.IncomingURI != "" || !st.Booted {
		t.Errorf("target status after the migration: %+v", st)
	}
	serial, _ := os.ReadFile(filepath.Join(dstDir, hypervisor.SerialLogName))
	if strings.Contains(string(serial), hypervisor.GuestBootedLine) {
		t.Errorf("target serial log shows a reboot:\n%s", serial)
	}
	t.Logf("migration: states %v, total %v, downtime %v, max throttle %d%%, max dirty rate %d pages/s, wall %v; source last CNT %d, target CNT %d",
		seen, total, downtime, maxThrottle, maxDirtyRate, time.Since(t0), srcLast, st.Heartbeat)
	t.Logf("source: %s", strings.TrimSpace(msg))
	// The launcher logs the completion from its own poll of QEMU (every 250 ms),
	// which may come after the status above already showed the guest running.
	waitUntil(t, 10*time.Second, "the target logging the end of the migration", func() bool {
		return strings.Contains(dst.log.String(), "incoming migration completed")
	})
	return total, downtime
}

// (a) an idle guest.
func TestMigrationIdleGuest(t *testing.T) {
	total, downtime := migrate(t, 0, MigrationRequest{MaxBandwidthBytes: 1 << 30, DowntimeLimitMs: 300})
	if total <= 0 {
		t.Errorf("total time %v", total)
	}
	t.Logf("idle guest: total %v, downtime %v", total, downtime)
}

// (b) a guest rewriting 64 MiB in a loop, with the default parameters.
func TestMigrationDirtyingGuest(t *testing.T) {
	total, downtime := migrate(t, 64, MigrationRequest{})
	t.Logf("dirtying guest (64 MiB): total %v, downtime %v", total, downtime)
}

// startSlowMigration boots a source and an incoming target and starts a
// migration throttled to 8 MiB/s, returning once it is active.
func startSlowMigration(t *testing.T) (src, dst *runResult, srcDir, dstDir, disk string) {
	img := guestImage(t)
	disk = overlay(t, img) + ":qcow2"
	src, srcDir = startVM(t, Options{VMName: "slow", Memory: "128Mi", Disks: []string{disk}})
	pollStatus(t, src, srcDir, 90*time.Second, "source heartbeat >= 3", func(s Status) bool { return s.Heartbeat >= 3 })
	dst, dstDir = startVM(t, Options{VMName: "slow", Memory: "128Mi", Disks: []string{disk}, Incoming: true})
	dstSt := pollStatus(t, dst, dstDir, 60*time.Second, "target incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := StartMigration(ctx, srcDir, MigrationRequest{URI: dstSt.IncomingURI, MaxBandwidthBytes: 8 << 20}); err != nil {
		t.Fatalf("StartMigration: %v", err)
	}
	if err := StartMigration(ctx, srcDir, MigrationRequest{URI: dstSt.IncomingURI}); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("second StartMigration: %v, want 409", err)
	}
	st := pollStatus(t, src, srcDir, 30*time.Second, "an active migration", func(s Status) bool {
		return s.Migration != nil && s.Migration.Status == "active" && s.Migration.TransferredBytes > 0
	})
	t.Logf("migration active: %+v", *st.Migration)
	return src, dst, srcDir, dstDir, disk
}

// checkSourceSurvived waits for the source's migration to end in want and
// checks that the guest runs on there and the launcher stays up.
func checkSourceSurvived(t *testing.T, src *runResult, srcDir, want string) {
	t.Helper()
	st := pollStatus(t, src, srcDir, 60*time.Second, "migration "+want, func(s Status) bool {
		return s.Migration != nil && s.Migration.Finished()
	})
	if st.Migration.Status != want || (want == "failed" && st.Migration.Error == "") || st.Migration.TotalBytes == 0 {
		t.Fatalf("source migration %+v, want %s", *st.Migration, want)
	}
	t.Logf("source migration after the end: %+v", *st.Migration)
	hb := st.Heartbeat
	st = pollStatus(t, src, srcDir, 30*time.Second, "two more source heartbeats", func(s Status) bool {
		return s.QEMU == "running" && s.Heartbeat >= hb+2
	})
	if st.Migration == nil || st.Migration.Status != want {
		t.Errorf("migration status not kept: %+v", st.Migration)
	}
	select {
	case <-src.done:
		t.Fatalf("source launcher exited (%d); log:\n%s", src.code, src.log)
	default:
	}
}

// (c) the target dies mid-migration.
func TestMigrationTargetDies(t *testing.T) {
	src, dst, srcDir, dstDir, _ := startSlowMigration(t)
	pid := statusNow(t, dstDir).PID
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil { // QEMU leads its own process group
		t.Fatalf("kill target: %v", err)
	}
	checkSourceSurvived(t, src, srcDir, "failed")
	if code := dst.wait(t, 30*time.Second); code != ExitQEMUDied {
		t.Errorf("target exit code %d, want %d", code, ExitQEMUDied)
	}
	t.Logf("target: %s", strings.TrimSpace(TerminationMessage(dstDir)))
}

// (d) the migration is cancelled; the guest stays, and a second migration
// with default parameters then succeeds.
func TestMigrationCancel(t *testing.T) {
	src, dst, srcDir, dstDir, disk := startSlowMigration(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := CancelMigration(ctx, srcDir); err != nil {
		t.Fatalf("CancelMigration: %v", err)
	}
	checkSourceSurvived(t, src, srcDir, "cancelled")
	if err := CancelMigration(ctx, srcDir); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("CancelMigration with none running: %v, want 409", err)
	}
	// The target saw its stream break off.
	if code := dst.wait(t, 30*time.Second); code != ExitQEMUDied {
		t.Errorf("target exit code %d, want %d", code, ExitQEMUDied)
	}
	if msg := TerminationMessage(dstDir); !strings.Contains(msg, "incoming migration failed") {
		t.Errorf("target termination message %q", msg)
	}

	// Try again: QEMU keeps migration parameters, the launcher must reset
	// the 8 MiB/s of the first attempt.
	dst2, dst2Dir := startVM(t, Options{VMName: "slow", Memory: "128Mi", Disks: []string{disk}, Incoming: true})
	d2 := pollStatus(t, dst2, dst2Dir, 60*time.Second, "second target incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	if err := StartMigration(ctx, srcDir, MigrationRequest{URI: d2.IncomingURI}); err != nil {
		t.Fatalf("second StartMigration: %v", err)
	}
	if code := src.wait(t, 3*time.Minute); code != ExitMigrated {
		t.Fatalf("source exit code %d after the second migration; log:\n%s", code, src.log)
	}
	t.Logf("second attempt: %s", strings.TrimSpace(TerminationMessage(srcDir)))
	last := lastCNT(srcDir)
	pollStatus(t, dst2, dst2Dir, 60*time.Second, "second target running on", func(s Status) bool {
		return s.QEMU == "running" && s.Heartbeat > last
	})
}

// A target stopped before the migration arrives exits 0; a port taken
// between choosing and binding it is retried.
func TestIncomingPortRetryAndStop(t *testing.T) {
	img := guestImage(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	orig := freePort
	calls := 0
	freePort = func(host string) (int, error) {
		calls++
		if calls == 1 {
			return busyPort, nil
		}
		return orig(host)
	}
	runDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Setenv("FERRY_NODE_IP", "127.0.0.1")
	r := startRun(ctx, Options{VMName: "in", Memory: "128Mi", Disks: []string{overlay(t, img)}, RunDir: runDir, Incoming: true})
	defer func() {
		cancel()
		<-r.done
		freePort = orig
	}()
	st := pollStatus(t, r, runDir, 60*time.Second, "incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	if st.QEMU != "inmigrate" || st.IncomingURI == "tcp:127.0.0.1:"+strconv.Itoa(busyPort) || calls < 2 {
		t.Errorf("status %+v after %d port picks (busy port %d)", st, calls, busyPort)
	}
	t.Logf("incoming on %s after %d picks (busy %d)", st.IncomingURI, calls, busyPort)
	// (Not probed with a connection: QEMU takes the first one as the
	// migration stream and exits when it breaks off.)
	// Migrating out of a VM that is itself waiting is refused.
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := StartMigration(sctx, runDir, MigrationRequest{URI: "tcp:127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "inmigrate") {
		t.Errorf("StartMigration on a waiting target: %v", err)
	}
	cancel()
	if code := r.wait(t, 30*time.Second); code != ExitStopped {
		t.Fatalf("exit code %d, want 0; log:\n%s", code, r.log)
	}
	if msg := TerminationMessage(runDir); !strings.Contains(msg, "before the incoming migration completed") {
		t.Errorf("termination message %q", msg)
	}
}

func TestMigrationAddress(t *testing.T) {
	t.Setenv("FERRY_NODE_IP", "")
	if a := migrationAddress(Options{}); a != "127.0.0.1" {
		t.Errorf("default %q", a)
	}
	t.Setenv("FERRY_NODE_IP", "10.1.2.3")
	if a := migrationAddress(Options{}); a != "10.1.2.3" {
		t.Errorf("env %q", a)
	}
	if a := migrationAddress(Options{MigrationAddress: "::1"}); a != "::1" {
		t.Errorf("option %q", a)
	}
	if d := DefaultCompletionTimeout(128 << 20); d != 150*time.Second {
		t.Errorf("DefaultCompletionTimeout(128Mi) = %v", d)
	}
	if d := DefaultCompletionTimeout(3<<30 + 1); d != 600*time.Second {
		t.Errorf("DefaultCompletionTimeout(3Gi+1) = %v", d)
	}
}
