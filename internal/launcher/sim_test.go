package launcher

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// simRun is a RunSimulated launcher started by a test.
type simRun struct {
	*runResult
	dir    string
	cancel context.CancelFunc
}

// startSimulated runs a simulated launcher for o in a fresh short run
// directory (socket paths must stay under 108 bytes) and stops it when the
// test ends.
func startSimulated(t *testing.T, so SimOptions, o Options) *simRun {
	t.Helper()
	dir, err := os.MkdirTemp("", "ls")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	o.RunDir = dir
	if o.VMName == "" {
		o.VMName = "vm"
	}
	if o.Disks == nil {
		o.Disks = []string{filepath.Join(dir, "missing.qcow2")}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runResult{log: &syncBuffer{}, done: make(chan struct{})}
	go func() {
		r.code = RunSimulated(ctx, o, r.log, so)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Errorf("simulated launcher %s did not stop within 5s", o.VMName)
		}
	})
	return &simRun{runResult: r, dir: dir, cancel: cancel}
}

// poll asks the launcher's status every 5ms until cond holds or d elapses.
func (s *simRun) poll(t *testing.T, d time.Duration, what string, cond func(Status) bool) Status {
	t.Helper()
	return pollStatusEvery(t, s.runResult, s.dir, 5*time.Millisecond, d, what, cond)
}

// stop cancels the launcher's ctx and checks it returns within 1s.
func (s *simRun) stop(t *testing.T) int {
	t.Helper()
	start := time.Now()
	s.cancel()
	code := s.wait(t, time.Second)
	t.Logf("stopped %v after ctx cancel", time.Since(start).Round(time.Microsecond))
	return code
}

func migrateTo(t *testing.T, src *simRun, uri string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := StartMigration(ctx, src.dir, MigrationRequest{URI: uri}); err != nil {
		t.Fatalf("StartMigration: %v", err)
	}
}

func TestSimulatedBootStatusAndStop(t *testing.T) {
	so := SimOptions{HeartbeatInterval: 10 * time.Millisecond}
	vm := startSimulated(t, so, Options{VMName: "web", Namespace: "ns", Memory: "1Gi", CPUs: 2})
	st := vm.poll(t, 5*time.Second, "three heartbeats", func(s Status) bool { return s.Heartbeat >= 3 })
	if st.QEMU != "running" || !st.Booted || st.Accel != SimAccel || st.VMName != "web" || st.Namespace != "ns" ||
		st.IncomingURI != "" || st.Migration != nil || time.Since(st.HeartbeatAt) > 5*time.Second {
		t.Errorf("status %+v", st)
	}
	// What the node agent's probe sees is StatusOf; heartbeats keep coming.
	vm.poll(t, 5*time.Second, "more heartbeats", func(s Status) bool { return s.Heartbeat >= st.Heartbeat+3 })

	if code := vm.stop(t); code != ExitStopped {
		t.Errorf("exit code %d, want %d", code, ExitStopped)
	}
	if msg := TerminationMessage(vm.dir); !strings.Contains(msg, "guest powered off on request (termination signal)") {
		t.Errorf("termination message %q", msg)
	}
	if _, err := os.Stat(filepath.Join(vm.dir, SocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("launcher.sock left behind: %v", err)
	}
	if _, err := StatusOf(context.Background(), vm.dir); !errors.Is(err, ErrNoLauncher) {
		t.Errorf("StatusOf after the stop: %v, want ErrNoLauncher", err)
	}
	if !strings.Contains(vm.log.String(), "(sim, 1048568 KiB, 2 vCPU)") {
		t.Errorf("log:\n%s", vm.log)
	}

	// POST /shutdown stops it too.
	vm = startSimulated(t, so, Options{})
	vm.poll(t, 5*time.Second, "booted", func(s Status) bool { return s.Booted })
	if err := RequestShutdown(context.Background(), vm.dir); err != nil {
		t.Fatal(err)
	}
	if code := vm.wait(t, time.Second); code != ExitStopped {
		t.Errorf("exit code %d after /shutdown", code)
	}
	if msg := TerminationMessage(vm.dir); !strings.Contains(msg, "shutdown requested via API") {
		t.Errorf("termination message %q", msg)
	}
}

// Options a simulated VM cannot honour are checked or ignored like Run's
// dry parts: no disk is an error, the NIC and the disk lease are left out.
func TestSimulatedOptions(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []Options{{RunDir: dir}, {RunDir: dir, Disks: []string{""}}, {RunDir: dir, Disks: []string{"d"}, Memory: "1Mi"}} {
		if code := RunSimulated(context.Background(), o, nil, SimOptions{}); code != ExitNoStart {
			t.Errorf("%+v: exit code %d, want %d", o, code, ExitNoStart)
		}
		t.Logf("%+v: %s", o, strings.TrimSpace(TerminationMessage(dir)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if code := RunSimulated(ctx, Options{RunDir: dir, Disks: []string{"d"}}, nil, SimOptions{}); code != ExitStopped {
		t.Errorf("cancelled before the start: exit code %d", code)
	}

	disk := filepath.Join(t.TempDir(), "disk.qcow2")
	vm := startSimulated(t, SimOptions{}, Options{Disks: []string{disk}, FencingToken: 7, IP: "10.66.10.5/24", Gateway: "10.66.10.1"})
	st := vm.poll(t, 5*time.Second, "running", func(s Status) bool { return s.QEMU == "running" })
	if st.IP != "" {
		t.Errorf("IP %q", st.IP)
	}
	if _, err := os.Stat(disk + ".lease"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a simulated VM took a disk lease: %v", err)
	}
	if _, err := os.Stat(disk); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a simulated VM created its disk: %v", err)
	}
	if code := vm.stop(t); code != ExitStopped {
		t.Errorf("exit code %d", code)
	}
}

func TestSimulatedMigration(t *testing.T) {
	so := SimOptions{Net: NewSimNet(), MigrationTime: 300 * time.Millisecond, Downtime: 30 * time.Millisecond, HeartbeatInterval: 5 * time.Millisecond}
	src := startSimulated(t, so, Options{VMName: "vm", Memory: "256Mi"})
	dst := startSimulated(t, so, Options{VMName: "vm", Memory: "256Mi", Incoming: true, MigrationAddress: "192.0.2.7"})
	in := dst.poll(t, 5*time.Second, "incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	if in.QEMU != "inmigrate" || in.Booted || in.Heartbeat != 0 || !strings.HasPrefix(in.IncomingURI, "tcp:192.0.2.7:") {
		t.Errorf("target waiting: %+v", in)
	}
	if err := validateMigrationURI(in.IncomingURI); err != nil {
		t.Errorf("incoming URI: %v", err)
	}
	src.poll(t, 5*time.Second, "source heartbeats", func(s Status) bool { return s.Heartbeat >= 5 })

	started := time.Now()
	migrateTo(t, src, in.IncomingURI)
	// Follow the source to its end: its last heartbeat and the phases it went through.
	var srcLast int64
	seen := map[string]bool{}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := StatusOf(ctx, src.dir)
		cancel()
		if err != nil {
			break
		}
		srcLast = max(srcLast, st.Heartbeat)
		if st.Migration != nil {
			seen[st.Migration.Status+"/"+st.QEMU] = true
		}
		if time.Since(started) > 5*time.Second {
			t.Fatalf("source still up 5s after the migration started: %+v", st)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if code := src.wait(t, time.Second); code != ExitMigrated {
		t.Fatalf("source exit code %d, want %d; log:\n%s", code, ExitMigrated, src.log)
	}
	took := time.Since(started)
	t.Logf("source phases seen: %v; gone after %v", seen, took)
	if !seen["active/running"] || took < 300*time.Millisecond {
		t.Errorf("phases %v, took %v", seen, took)
	}
	msg := TerminationMessage(src.dir)
	if !strings.HasPrefix(msg, "migrated to "+in.IncomingURI+": total ") || !strings.Contains(msg, "255 MiB sent") {
		t.Errorf("source termination message %q", msg)
	}
	final, err := FinalMigration(src.dir)
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != "completed" || final.URI != in.IncomingURI || final.TotalTimeMs < 290 || final.DowntimeMs < 25 ||
		final.TotalBytes != 256<<20-8<<10 || final.TransferredBytes != final.TotalBytes || final.RemainingBytes != 0 {
		t.Errorf("final migration status %+v", final)
	}

	// The guest runs on the target, its heartbeat continuing from the source's.
	st := dst.poll(t, 5*time.Second, "target running", func(s Status) bool { return s.QEMU == "running" })
	if !st.Booted || st.IncomingURI != "" || st.Heartbeat < srcLast {
		t.Errorf("target after the migration: %+v (source's last heartbeat %d)", st, srcLast)
	}
	dst.poll(t, 5*time.Second, "target heartbeat above the source's", func(s Status) bool { return s.Heartbeat > srcLast+2 })
	waitUntil(t, 2*time.Second, "the target logging the end of the migration", func() bool {
		return strings.Contains(dst.log.String(), "incoming migration completed; guest running")
	})

	// The target stopped listening: a second stream is refused.
	other := startSimulated(t, so, Options{VMName: "other"})
	other.poll(t, 5*time.Second, "other running", func(s Status) bool { return s.QEMU == "running" })
	migrateTo(t, other, in.IncomingURI)
	other.poll(t, 5*time.Second, "refused", func(s Status) bool {
		return s.Migration != nil && s.Migration.Status == "failed" && strings.Contains(s.Migration.Error, "Connection refused")
	})

	// The migrated guest moves on again, its counter with it.
	dst2 := startSimulated(t, so, Options{VMName: "vm", Memory: "256Mi", Incoming: true, MigrationAddress: "192.0.2.7"})
	in2 := dst2.poll(t, 5*time.Second, "second incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	if in2.IncomingURI == in.IncomingURI {
		t.Errorf("URI %s handed out twice", in2.IncomingURI)
	}
	hb := dst.poll(t, time.Second, "status", func(Status) bool { return true }).Heartbeat
	migrateTo(t, dst, in2.IncomingURI)
	if code := dst.wait(t, 5*time.Second); code != ExitMigrated {
		t.Fatalf("first target exit code %d; log:\n%s", code, dst.log)
	}
	dst2.poll(t, 5*time.Second, "second target heartbeat", func(s Status) bool { return s.QEMU == "running" && s.Heartbeat > hb })
}

func TestSimulatedMigrationRefused(t *testing.T) {
	so := SimOptions{Net: NewSimNet(), HeartbeatInterval: 5 * time.Millisecond, MigrationTime: 50 * time.Millisecond}
	src := startSimulated(t, so, Options{})
	src.poll(t, 5*time.Second, "booted", func(s Status) bool { return s.Booted })
	migrateTo(t, src, "tcp:127.0.0.1:4444")
	st := src.poll(t, 5*time.Second, "migration failed", func(s Status) bool {
		return s.Migration != nil && s.Migration.Finished()
	})
	if st.Migration.Status != "failed" || st.Migration.Error != "Failed to connect to '127.0.0.1:4444': Connection refused" {
		t.Errorf("migration %+v", *st.Migration)
	}
	src.poll(t, 5*time.Second, "the guest running on", func(s Status) bool { return s.QEMU == "running" && s.Heartbeat > st.Heartbeat+3 })

	// A later migration to a listening target still works.
	dst := startSimulated(t, so, Options{Incoming: true})
	in := dst.poll(t, 5*time.Second, "incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	migrateTo(t, src, in.IncomingURI)
	if code := src.wait(t, 5*time.Second); code != ExitMigrated {
		t.Fatalf("source exit code %d; log:\n%s", code, src.log)
	}
	dst.poll(t, 5*time.Second, "target running", func(s Status) bool { return s.QEMU == "running" })
}

// slowMigration starts a source migrating to a target for 10s.
func slowMigration(t *testing.T) (src, dst *simRun, uri string) {
	t.Helper()
	so := SimOptions{Net: NewSimNet(), HeartbeatInterval: 5 * time.Millisecond, MigrationTime: 10 * time.Second}
	src = startSimulated(t, so, Options{})
	dst = startSimulated(t, so, Options{Incoming: true})
	uri = dst.poll(t, 5*time.Second, "incomingURI", func(s Status) bool { return s.IncomingURI != "" }).IncomingURI
	src.poll(t, 5*time.Second, "booted", func(s Status) bool { return s.Booted })
	migrateTo(t, src, uri)
	st := src.poll(t, 5*time.Second, "migration progress", func(s Status) bool {
		return s.Migration != nil && s.Migration.Status == "active" && s.Migration.TransferredBytes > 0
	})
	if st.Migration.TotalBytes != 128<<20-8<<10 || st.Migration.RemainingBytes != st.Migration.TotalBytes-st.Migration.TransferredBytes {
		t.Errorf("migration progress %+v", *st.Migration)
	}
	return src, dst, uri
}

// A target stopped mid-migration exits 0; the source's migration fails and
// the guest runs on there.
func TestSimulatedTargetStops(t *testing.T) {
	src, dst, uri := slowMigration(t)
	if code := dst.stop(t); code != ExitStopped {
		t.Errorf("target exit code %d, want %d", code, ExitStopped)
	}
	if msg := TerminationMessage(dst.dir); !strings.Contains(msg, "before the incoming migration completed") {
		t.Errorf("target termination message %q", msg)
	}
	st := src.poll(t, 2*time.Second, "migration failed", func(s Status) bool { return s.Migration.Finished() })
	if st.Migration.Status != "failed" || !strings.Contains(st.Migration.Error, "Broken pipe") {
		t.Errorf("source migration %+v", *st.Migration)
	}
	src.poll(t, 5*time.Second, "the guest running on", func(s Status) bool { return s.QEMU == "running" && s.Heartbeat > st.Heartbeat+3 })

	// Nothing listens there any more.
	migrateTo(t, src, uri)
	st = src.poll(t, 2*time.Second, "second migration failed", func(s Status) bool { return s.Migration.Finished() })
	if !strings.Contains(st.Migration.Error, "Connection refused") {
		t.Errorf("second migration %+v", *st.Migration)
	}
}

// A cancelled migration leaves the guest on the source; the target sees its
// stream break off and exits 2.
func TestSimulatedMigrationCancel(t *testing.T) {
	src, dst, _ := slowMigration(t)
	if err := CancelMigration(context.Background(), src.dir); err != nil {
		t.Fatal(err)
	}
	st := src.poll(t, 2*time.Second, "migration cancelled", func(s Status) bool { return s.Migration.Finished() })
	if st.Migration.Status != "cancelled" || st.Migration.TotalTimeMs <= 0 || st.Migration.TotalBytes == 0 {
		t.Errorf("source migration %+v", *st.Migration)
	}
	if code := dst.wait(t, time.Second); code != ExitQEMUDied {
		t.Errorf("target exit code %d, want %d", code, ExitQEMUDied)
	}
	if msg := TerminationMessage(dst.dir); !strings.Contains(msg, "incoming migration failed") {
		t.Errorf("target termination message %q", msg)
	}
	src.poll(t, 5*time.Second, "the guest running on", func(s Status) bool { return s.QEMU == "running" && s.Heartbeat > st.Heartbeat+3 })
}

// A source stopped mid-migration cancels it and stops within a second.
func TestSimulatedSourceStops(t *testing.T) {
	src, dst, _ := slowMigration(t)
	if code := src.stop(t); code != ExitStopped {
		t.Errorf("source exit code %d, want %d", code, ExitStopped)
	}
	if msg := TerminationMessage(src.dir); !strings.Contains(msg, "guest powered off on request (termination signal)") {
		t.Errorf("source termination message %q", msg)
	}
	if code := dst.wait(t, time.Second); code != ExitQEMUDied {
		t.Errorf("target exit code %d, want %d", code, ExitQEMUDied)
	}
}

// Many simulated VMs in one process: few goroutines each, and none left
// once they stopped.
func TestSimulatedManyVMs(t *testing.T) {
	const n = 200
	so := SimOptions{Net: NewSimNet(), HeartbeatInterval: 20 * time.Millisecond}
	runtime.GC()
	before := runtime.NumGoroutine()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	vms := make([]*simRun, n)
	for i := range vms {
		vms[i] = startSimulated(t, so, Options{Incoming: i%2 == 1})
	}
	uris := map[string]bool{}
	for _, vm := range vms {
		st := vm.poll(t, 10*time.Second, "up", func(s Status) bool { return s.Heartbeat > 0 || s.IncomingURI != "" })
		if st.IncomingURI != "" {
			uris[st.IncomingURI] = true
		}
	}
	if len(uris) != n/2 {
		t.Errorf("%d distinct incoming URIs for %d targets", len(uris), n/2)
	}
	// The probes' connections end on the server side a moment after the client's: wait for
	// their goroutines to go (bounded), then measure.
	settle := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine()-before > 3*n && time.Now().Before(settle) {
		time.Sleep(5 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	perVM := float64(runtime.NumGoroutine()-before) / n
	t.Logf("%.2f goroutines per VM (half of them targets, which watch for their migration); heap %.1f KiB per VM",
		perVM, float64(int64(ms1.HeapAlloc)-int64(ms0.HeapAlloc))/n/1024)
	if perVM > 3 {
		t.Errorf("%.2f goroutines per VM", perVM)
	}

	var wg sync.WaitGroup
	for _, vm := range vms {
		wg.Go(func() {
			vm.cancel()
			select {
			case <-vm.done:
			case <-time.After(time.Second):
				t.Errorf("a VM did not stop within 1s")
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after the stop, %d before:\n%s", g, before, buf[:runtime.Stack(buf, true)])
	}
	so.Net.mu.Lock()
	left := len(so.Net.listeners)
	so.Net.mu.Unlock()
	if left != 0 {
		t.Errorf("%d targets still registered", left)
	}
}

func TestSimNetPorts(t *testing.T) {
	n := NewSimNet()
	a, b := &simVM{}, &simVM{}
	n.next = map[string]int{"::1": simLastPort}
	n.listeners = map[string]*simVM{"tcp:[::1]:1024": b}
	u1, err := n.listen("::1", a)
	if err != nil || u1 != "tcp:[::1]:65535" {
		t.Fatalf("listen: %q %v", u1, err)
	}
	u2, _ := n.listen("::1", a) // wraps around, skipping the taken 1024
	if u2 != "tcp:[::1]:1025" {
		t.Errorf("after the wrap: %q", u2)
	}
	if err := validateMigrationURI(u1); err != nil {
		t.Error(err)
	}
	n.unlisten("tcp:[::1]:1024", a) // not a's
	if n.listeners["tcp:[::1]:1024"] != b {
		t.Error("unlisten removed another VM's registration")
	}
	var zero SimNet
	if u, err := zero.listen("10.0.0.1", a); err != nil || u != "tcp:10.0.0.1:1024" {
		t.Errorf("zero SimNet: %q %v", u, err)
	}
}
