package launcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/disklease"
	"github.com/ferryvm/ferry/internal/guestimage"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

const setupHint = "run: apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils " +
	"linux-image-cloud-amd64 busybox-static dosfstools mtools syslinux syslinux-common fdisk cpio"

var (
	guestOnce sync.Once
	guestPath string
	guestErr  error
)

// guestImage builds (once, cached in guestimage.CacheDir()) the test guest image. Missing
// QEMU fails the test.
func guestImage(t *testing.T) string {
	t.Helper()
	for _, bin := range []string{hypervisor.DefaultBinary, "qemu-img"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found; %s", bin, setupHint)
		}
	}
	guestOnce.Do(func() {
		guestPath, guestErr = guestimage.EnsureCached(context.Background())
	})
	if guestErr != nil {
		t.Fatalf("building guest image: %v; %s", guestErr, setupHint)
	}
	return guestPath
}

func overlay(t *testing.T, base string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.qcow2")
	out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", p).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, out)
	}
	return p
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type runResult struct {
	code int
	log  *syncBuffer
	done chan struct{}
}

func startRun(ctx context.Context, o Options) *runResult {
	r := &runResult{log: &syncBuffer{}, done: make(chan struct{})}
	go func() {
		r.code = Run(ctx, o, r.log)
		close(r.done)
	}()
	return r
}

func (r *runResult) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(d):
		t.Fatalf("Run did not return within %v; log:\n%s", d, r.log)
		return -1
	}
}

// pollStatus polls StatusOf every 100ms until cond holds or d elapses.
func pollStatus(t *testing.T, r *runResult, runDir string, d time.Duration, what string, cond func(Status) bool) Status {
	t.Helper()
	return pollStatusEvery(t, r, runDir, 100*time.Millisecond, d, what, cond)
}

// pollStatusEvery polls StatusOf every interval until cond holds or d elapses; it fails the
// test when the launcher exits meanwhile.
func pollStatusEvery(t *testing.T, r *runResult, runDir string, every, d time.Duration, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(d)
	var last Status
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			t.Fatalf("the launcher exited (%d) while waiting for %s; log:\n%s", r.code, what, r.log)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last, lastErr = StatusOf(ctx, runDir)
		cancel()
		if lastErr == nil && cond(last) {
			return last
		}
		time.Sleep(every)
	}
	t.Fatalf("timed out after %v waiting for %s: last status %+v, err %v; log:\n%s\nserial log (tail):\n%s", d, what, last, lastErr, r.log, serialTail(runDir))
	return last
}

// serialTail is the end of runDir's serial log, for a failure message.
func serialTail(runDir string) string {
	serial, _ := os.ReadFile(filepath.Join(runDir, hypervisor.SerialLogName))
	if len(serial) > 2048 {
		return fmt.Sprintf("(%d bytes, the last 2048)\n%s", len(serial), serial[len(serial)-2048:])
	}
	return string(serial)
}

func TestRunBootStatusAndSIGTERM(t *testing.T) {
	img := guestImage(t)
	runDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Now()
	r := startRun(ctx, Options{VMName: "vm1", Namespace: "default", CPUs: 1, Memory: "128Mi",
		Disks: []string{overlay(t, img) + ":qcow2"}, RunDir: runDir})

	st := pollStatus(t, r, runDir, 90*time.Second, "heartbeat >= 2", func(s Status) bool { return s.Heartbeat >= 2 })
	t.Logf("heartbeat %d after %v: %+v", st.Heartbeat, time.Since(t0), st)
	if st.QEMU != "running" || !st.Booted || st.PID <= 0 || st.HeartbeatAt.IsZero() || st.VMName != "vm1" {
		t.Errorf("unexpected status %+v", st)
	}
	args, _ := os.ReadFile(filepath.Join("/proc", itoa(st.PID), "cmdline"))
	if !bytes.Contains(args, []byte("131064K")) {
		t.Errorf("qemu not started with 131064K: %q", args)
	}

	// Raw JSON shape for the node agent.
	var raw map[string]any
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := call(ctx2, runDir, http.MethodGet, "/status", http.StatusOK, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"qemu", "booted", "heartbeat", "heartbeatAt", "pid"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status JSON lacks %q: %v", k, raw)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, raw["heartbeatAt"].(string)); err != nil {
		t.Errorf("heartbeatAt: %v", err)
	}

	t1 := time.Now()
	cancel() // SIGTERM
	if code := r.wait(t, 60*time.Second); code != ExitStopped {
		t.Fatalf("exit code %d, want 0; log:\n%s", code, r.log)
	}
	t.Logf("graceful stop took %v; log:\n%s", time.Since(t1), r.log)
	serial, _ := os.ReadFile(filepath.Join(runDir, hypervisor.SerialLogName))
	if !bytes.Contains(serial, []byte("ACPI POWERDOWN")) {
		t.Errorf("guest did not see the ACPI powerdown")
	}
	if _, err := StatusOf(context.Background(), runDir); !errors.Is(err, ErrNoLauncher) {
		t.Errorf("StatusOf after exit: %v, want ErrNoLauncher", err)
	}
}

func TestRunGuestPowersOff(t *testing.T) {
	img := guestImage(t)
	runDir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := startRun(ctx, Options{VMName: "vm2", Memory: "128Mi", Disks: []string{overlay(t, img)}, RunDir: runDir})
	pollStatus(t, r, runDir, 90*time.Second, "heartbeat >= 1", func(s Status) bool { return s.Heartbeat >= 1 })

	// Type "poweroff" through the interactive console helper.
	var out syncBuffer
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	if err := hypervisor.Console(cctx, runDir, strings.NewReader("poweroff\n"), &out); err != nil {
		t.Errorf("Console: %v", err)
	}
	if !strings.Contains(out.String(), "CNT ") {
		t.Errorf("console output lacks the log tail / heartbeat: %q", out.String())
	}
	if code := r.wait(t, 60*time.Second); code != ExitStopped {
		t.Fatalf("exit code %d, want 0; log:\n%s", code, r.log)
	}
	if !strings.Contains(r.log.String(), "guest powered off") {
		t.Errorf("log does not say the guest powered off:\n%s", r.log)
	}
}

func TestRunQEMUKilled(t *testing.T) {
	img := guestImage(t)
	runDir := t.TempDir()
	r := startRun(context.Background(), Options{VMName: "vm3", Disks: []string{overlay(t, img)}, RunDir: runDir})
	st := pollStatus(t, r, runDir, 60*time.Second, "a pid", func(s Status) bool { return s.PID > 0 })
	syscall.Kill(st.PID, syscall.SIGKILL)
	if code := r.wait(t, 30*time.Second); code != ExitQEMUDied {
		t.Fatalf("exit code %d, want 2; log:\n%s", code, r.log)
	}
	if msg := TerminationMessage(runDir); !strings.Contains(msg, "killed") {
		t.Errorf("termination message %q does not mention the kill", msg)
	}
}

func TestRunBrokenDisk(t *testing.T) {
	if _, err := exec.LookPath(hypervisor.DefaultBinary); err != nil {
		t.Fatalf("%s not found; %s", hypervisor.DefaultBinary, setupHint)
	}
	runDir := t.TempDir()
	garbage := filepath.Join(t.TempDir(), "garbage.img")
	os.WriteFile(garbage, bytes.Repeat([]byte("garbage!"), 4096), 0o644)
	for _, disk := range []string{garbage, garbage + ":qcow2", garbage + ".missing"} {
		var log syncBuffer
		code := Run(context.Background(), Options{VMName: "bad", Disks: []string{disk}, RunDir: runDir}, &log)
		if code != ExitNoStart {
			t.Fatalf("%s: exit code %d, want 1; log:\n%s", disk, code, log.String())
		}
		path := strings.TrimSuffix(disk, ":qcow2")
		msg := TerminationMessage(runDir)
		if !strings.Contains(msg, path) || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
			t.Errorf("%s: termination message %q should be one line naming the image", disk, msg)
		}
		if !strings.Contains(log.String(), path) {
			t.Errorf("%s: log %q should name the image", disk, log.String())
		}
		t.Logf("%s -> %s", disk, strings.TrimSpace(msg))
	}
}

func TestLoopWithFake(t *testing.T) {
	newL := func() (*launcher, *hypervisor.Fake) {
		f := hypervisor.NewFake(hypervisor.Config{Name: "fake"})
		return &launcher{o: Options{VMName: "fake"}, vm: f, hb: f, log: &logger{}, stop: make(chan string, 1)}, f
	}

	// Status and POST /shutdown through the HTTP handler.
	l, f := newL()
	f.Tick()
	f.Tick()
	srv := httptest.NewServer(l.handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.QEMU != "running" || st.Heartbeat != 2 || !st.Booted || st.PID != 4242 {
		t.Errorf("status %+v", st)
	}
	resp, err = http.Post(srv.URL+"/shutdown", "", nil)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /shutdown: %v %v", resp, err)
	}
	resp.Body.Close()
	if code, msg := l.loop(context.Background()); code != ExitStopped || !strings.Contains(msg, "guest powered off on request") {
		t.Errorf("after /shutdown: %d %q", code, msg)
	}

	l, f = newL()
	f.GuestPowerOff()
	if code, msg := l.loop(context.Background()); code != ExitStopped || msg != "guest powered off" {
		t.Errorf("guest poweroff: %d %q", code, msg)
	}

	l, f = newL()
	f.Crash("signal: segmentation fault")
	if code, msg := l.loop(context.Background()); code != ExitQEMUDied || !strings.Contains(msg, "segmentation") {
		t.Errorf("crash: %d %q", code, msg)
	}

	l, _ = newL()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if code, _ := l.loop(ctx); code != ExitStopped {
		t.Errorf("cancelled ctx: %d", code)
	}
}

func TestParseMemory(t *testing.T) {
	good := map[string]int64{
		"128Mi": 128 << 20, "1Gi": 1 << 30, "1.5Gi": 3 << 29, "512M": 512e6, "134217728": 134217728,
		"1e9": 1e9, "2k": 2000, "1Ti": 1 << 40, " 64Mi ": 64 << 20,
	}
	for in, want := range good {
		if got, err := ParseMemory(in); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Mi", "-1Gi", "0", "1.5", "12x", "100m", "1/2Gi", "abc"} {
		if got, err := ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q) = %d, want error", in, got)
		}
	}
	if kib, err := memoryKiB("128Mi"); err != nil || kib != 131064 {
		t.Errorf("memoryKiB(128Mi) = %d, %v; want 131064", kib, err)
	}
	if kib, err := memoryKiB("100000Ki"); err != nil || kib != 100000 {
		t.Errorf("memoryKiB(100000Ki) = %d, %v", kib, err)
	}
}

func TestParseDisk(t *testing.T) {
	for in, want := range map[string]hypervisor.Disk{
		"/d/a.img":                 {Path: "/d/a.img"},
		"/d/a.qcow2:qcow2":         {Path: "/d/a.qcow2", Format: "qcow2"},
		"/d/a:raw":                 {Path: "/d/a", Format: "raw"},
		"/d/x:y/a.img":             {Path: "/d/x:y/a.img"},
		"/s/seed.iso:raw:ro:cdrom": {Path: "/s/seed.iso", Format: "raw", ReadOnly: true, CDROM: true},
		"/s/seed.iso:cdrom":        {Path: "/s/seed.iso", ReadOnly: true, CDROM: true},
		"/s/cdrom":                 {Path: "/s/cdrom"},
	} {
		if got, err := parseDisk(in); err != nil || got != want {
			t.Errorf("parseDisk(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestLeaseFile(t *testing.T) {
	disks := func(ds ...hypervisor.Disk) []hypervisor.Disk { return ds }
	for _, tt := range []struct {
		token int64
		disks []hypervisor.Disk
		want  string
	}{
		{1, disks(hypervisor.Disk{Path: "/d/a.qcow2"}), "/d/a.qcow2.lease"},
		{1, disks(hypervisor.Disk{Path: "/d/base.img", ReadOnly: true}, hypervisor.Disk{Path: "/d/data.img"}), "/d/data.img.lease"},
		{1, disks(hypervisor.Disk{Path: "/d/base.img", ReadOnly: true}), ""},
		{0, disks(hypervisor.Disk{Path: "/d/a.qcow2"}), ""},
	} {
		if got := leaseFile(Options{FencingToken: tt.token}, tt.disks); got != tt.want {
			t.Errorf("leaseFile(token %d, %+v) = %q, want %q", tt.token, tt.disks, got, tt.want)
		}
	}
}

// leasedFake returns a launcher around a fake QEMU holding the disk lease of
// o as Run holds it for a cold start.
func leasedFake(t *testing.T, ctx context.Context, o Options) (*launcher, *hypervisor.Fake, *syncBuffer) {
	t.Helper()
	log := &syncBuffer{}
	lg := &logger{w: log}
	f := hypervisor.NewFake(hypervisor.Config{Name: o.VMName, Incoming: o.Incoming})
	l := newLauncher(o, f, f, lg)
	l.leasePath = leaseFile(o, []hypervisor.Disk{{Path: o.Disks[0]}})
	l.fence = &fencing{log: lg}
	if !o.Incoming {
		lease, err := disklease.Acquire(ctx, l.leasePath, o.FencingToken, leaseHolder(o), leaseNode(), o.LeaseTTL, lg.printf)
		if err != nil {
			t.Fatal(err)
		}
		l.fence.start(ctx, lease)
	}
	l.fence.attach(f)
	return l, f, log
}

func readLease(t *testing.T, path string) disklease.Record {
	t.Helper()
	r, err := disklease.Read(path)
	if err != nil || r == nil {
		t.Fatalf("reading the lease: %v, %v", r, err)
	}
	return *r
}

func TestFencedWhileRunningWithFake(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ttl = 600 * time.Millisecond
	disk := filepath.Join(t.TempDir(), "disk.qcow2")
	o := Options{VMName: "old", RunDir: t.TempDir(), Disks: []string{disk}, FencingToken: 1, LeaseTTL: ttl}
	l, f, log := leasedFake(t, ctx, o)

	type outcome struct {
		code int
		msg  string
		at   time.Time
	}
	ended := make(chan outcome, 1)
	go func() {
		code, msg := l.loop(ctx)
		ended <- outcome{code, msg, time.Now()}
	}()

	// A newer instance starts elsewhere with token 2.
	newerStarts := make(chan time.Time, 1)
	go func() {
		if _, err := disklease.Acquire(ctx, l.leasePath, 2, "newer", "n2", ttl, nil); err != nil {
			t.Errorf("the newer instance's Acquire: %v", err)
		}
		newerStarts <- time.Now()
	}()

	var got outcome
	select {
	case got = <-ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("the fenced launcher kept running; log:\n%s", log)
	}
	if got.code != ExitSuperseded || !strings.Contains(got.msg, "token 2 > 1, holder newer on node n2") || !strings.Contains(got.msg, "fenced") {
		t.Errorf("loop = %d %q; want ExitSuperseded naming the newer holder", got.code, got.msg)
	}
	if calls := strings.Join(f.Calls(), ","); !strings.Contains(calls, "Kill") || strings.Contains(calls, "Shutdown") {
		t.Errorf("fake calls %q; want a Kill and no graceful shutdown", calls)
	}
	select {
	case at := <-newerStarts:
		if at.Before(got.at) {
			t.Errorf("the newer instance could start %v before the old VM was killed", got.at.Sub(at))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the newer instance's Acquire did not return")
	}
	l.fence.release()
	if r := readLease(t, l.leasePath); r.Token != 2 || r.Holder != "newer" || r.RenewedAt.IsZero() {
		t.Errorf("lease after the fenced launcher ended: %+v; want the newer holder's", r)
	}
	t.Logf("log:\n%s", log)
}

func TestRunRefusesOlderToken(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.qcow2")
	if _, err := disklease.Acquire(context.Background(), disk+".lease", 2, "newer", "n2", time.Second, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(disk + ".lease")
	runDir := t.TempDir()
	var log syncBuffer
	code := Run(context.Background(), Options{VMName: "old", Namespace: "default", Disks: []string{disk + ":qcow2"},
		RunDir: runDir, FencingToken: 1, LeaseTTL: time.Second}, &log)
	if code != ExitSuperseded {
		t.Fatalf("exit code %d, want %d; log:\n%s", code, ExitSuperseded, log.String())
	}
	msg := TerminationMessage(runDir)
	for _, want := range []string{"VM default/old not started", "newer instance", "token 2 > 1, holder newer on node n2", "this instance was fenced"} {
		if !strings.Contains(msg, want) {
			t.Errorf("termination message %q lacks %q", msg, want)
		}
	}
	if after, _ := os.ReadFile(disk + ".lease"); !bytes.Equal(before, after) {
		t.Errorf("the refused launcher changed the lease:\n%s\n->\n%s", before, after)
	}
	entries, _ := os.ReadDir(runDir)
	for _, e := range entries {
		if e.Name() != TerminationMessageName {
			t.Errorf("run directory has %s: QEMU or the API was started", e.Name())
		}
	}
	t.Logf("%s", strings.TrimSpace(msg))
}

func TestLeaseHandoverWithFake(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ttl = 300 * time.Millisecond
	disk := filepath.Join(t.TempDir(), "disk.qcow2")
	o := Options{VMName: "vm", Disks: []string{disk}, FencingToken: 5, LeaseTTL: ttl}
	srcO, dstO := o, o
	srcO.RunDir, dstO.RunDir, dstO.Incoming = t.TempDir(), t.TempDir(), true
	src, srcVM, srcLog := leasedFake(t, ctx, srcO)
	dst, dstVM, dstLog := leasedFake(t, ctx, dstO)
	dst.incomingURI = "tcp:127.0.0.1:4444"
	go dst.watchIncoming(ctx)

	if r := readLease(t, src.leasePath); r.Holder != leaseHolder(srcO) {
		t.Fatalf("a waiting target took the lease: %+v", r)
	}
	dstVM.FinishIncoming()
	waitUntil(t, 10*time.Second, "the target's takeover", func() bool {
		r := readLease(t, src.leasePath)
		return r.Holder == leaseHolder(dstO) && r.Token == 5 && r.Handover
	})
	waitUntil(t, 10*time.Second, "the source to see the handover", func() bool {
		return strings.Contains(srcLog.String(), "handed over to "+leaseHolder(dstO))
	})
	if slices.Contains(srcVM.Calls(), "Kill") || src.fence.fencedBy() != "" {
		t.Errorf("the handover fenced the source: %v %q", srcVM.Calls(), src.fence.fencedBy())
	}
	src.fence.release()
	taken := readLease(t, src.leasePath)
	if taken.Holder != leaseHolder(dstO) || taken.RenewedAt.IsZero() {
		t.Fatalf("the source's release touched the target's lease: %+v", taken)
	}
	waitUntil(t, 10*time.Second, "the target to renew", func() bool {
		return readLease(t, src.leasePath).RenewedAt.After(taken.RenewedAt)
	})

	// A cold start with a higher token fences the target.
	newer := make(chan error, 1)
	go func() {
		_, err := disklease.Acquire(ctx, src.leasePath, 6, "newer", "n2", ttl, nil)
		newer <- err
	}()
	waitUntil(t, 10*time.Second, "the target to be fenced", func() bool { return slices.Contains(dstVM.Calls(), "Kill") })
	if why := dst.fence.fencedBy(); !strings.Contains(why, "token 6 > 5") {
		t.Errorf("target fenced with %q", why)
	}
	if code, msg := dst.loop(ctx); code != ExitSuperseded {
		t.Errorf("target loop = %d %q; want ExitSuperseded", code, msg)
	}
	if err := <-newer; err != nil {
		t.Errorf("the newer instance's Acquire: %v", err)
	}
	t.Logf("source log:\n%s\ntarget log:\n%s", srcLog, dstLog)
}

// TestRunFencedByNewerInstance runs two real launchers on one disk: the one
// with the older token is killed before the newer one starts its QEMU (which
// QEMU's own image locking would refuse otherwise).
func TestRunFencedByNewerInstance(t *testing.T) {
	disk := overlay(t, guestImage(t))
	o := Options{VMName: "vm", Memory: "128Mi", Disks: []string{disk + ":qcow2"}, FencingToken: 1, LeaseTTL: time.Second}
	old, oldDir := startVM(t, o)
	pollStatus(t, old, oldDir, 60*time.Second, "the old instance's QEMU", func(s Status) bool { return s.PID > 0 })

	o.FencingToken, o.RunDir = 2, ""
	newer, newerDir := startVM(t, o)
	if code := old.wait(t, 30*time.Second); code != ExitSuperseded {
		t.Fatalf("old instance exit code %d, want %d; log:\n%s", code, ExitSuperseded, old.log)
	}
	if msg := TerminationMessage(oldDir); !strings.Contains(msg, "token 2 > 1") {
		t.Errorf("old instance's termination message %q", msg)
	}
	st := pollStatus(t, newer, newerDir, 60*time.Second, "the newer instance's QEMU", func(s Status) bool { return s.PID > 0 })
	if !strings.Contains(newer.log.String(), "waiting") {
		t.Errorf("the newer instance did not wait for the old one; log:\n%s", newer.log)
	}
	if r := readLease(t, disk+".lease"); r.Token != 2 || r.Holder != leaseHolder(Options{RunDir: newerDir}) {
		t.Errorf("lease %+v", r)
	}
	t.Logf("newer instance runs as pid %d; old log:\n%s\nnewer log:\n%s", st.PID, old.log, newer.log)
}
