package launcher

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/migrationtls"
)

// nodeCredentials writes node's migration credentials, valid from now for d, into a new
// directory, as the node agent does.
func nodeCredentials(t *testing.T, node string, now time.Time, d time.Duration) string {
	t.Helper()
	certPEM, keyPEM, err := migrationtls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := migrationtls.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.NodeCredentials(node, now, d)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), migrationtls.DirName)
	if err := migrationtls.Write(dir, c); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestStageTLS(t *testing.T) {
	now := time.Now()
	dir := nodeCredentials(t, "node-1", now, time.Hour)
	runDir := t.TempDir()
	stage, cleanup, err := stageTLS(dir, runDir, "node-1", now)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(stage); err != nil || st.Mode().Perm() != 0o700 || filepath.Dir(stage) != runDir {
		t.Fatalf("stage %s: %v %v", stage, st, err)
	}
	for _, f := range []string{hypervisor.TLSCACertFile, hypervisor.TLSServerCertFile, hypervisor.TLSServerKeyFile, hypervisor.TLSClientCertFile, hypervisor.TLSClientKeyFile} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, err := os.ReadFile(filepath.Join(stage, f))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s not staged: %v", f, err)
		}
	}
	cleanup()
	if _, err := os.Stat(stage); !os.IsNotExist(err) {
		t.Errorf("the staged key outlived cleanup: %v", err)
	}

	for _, tc := range []struct {
		name, dir, node string
		at              time.Time
		says            string
	}{
		{"no certificate yet", filepath.Join(t.TempDir(), "none"), "node-1", now, "this node has no migration certificate yet"},
		{"expired", dir, "node-1", now.Add(2 * time.Hour), "expired at"},
		{"another node's", dir, "node-2", now, "not node node-2"},
	} {
		_, _, err := stageTLS(tc.dir, runDir, tc.node, tc.at)
		if err == nil || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "migration TLS is on") {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.says)
		}
	}
	if entries, _ := os.ReadDir(runDir); len(entries) != 0 {
		t.Errorf("failed stagings left %d entries in the run directory", len(entries))
	}
}

// A source with TLS on migrates only with its node's certificate and the target's name,
// hands QEMU a private copy of the credentials and removes it once QEMU has read them.
func TestMigrateOverTLSWithFake(t *testing.T) {
	t.Setenv("FERRY_NODE_NAME", "node-1")
	l, f, srv, out := newFakeLauncher(t)
	l.tlsDir = nodeCredentials(t, "node-1", time.Now(), time.Hour)

	if code, msg := post(t, srv.URL+"/migrate", `{"uri":"tcp:10.0.0.2:4444"}`); code != 500 || !strings.Contains(msg, "names no target node") {
		t.Errorf("POST /migrate without targetNode: %d %s", code, msg)
	}
	if st := fakeStatus(t, srv.URL); st.QEMU != "running" || st.Migration == nil || st.Migration.Status != "failed" || !strings.Contains(st.Migration.Error, "names no target node") {
		t.Errorf("status after the refused migration: %+v %+v", st, st.Migration)
	}

	var got *hypervisor.MigrationTLS
	var staged bool
	f.MigrateFunc = func(uri string, p hypervisor.MigrationParams) error {
		got = p.TLS
		if p.TLS != nil {
			_, err := migrationtls.Load(p.TLS.Dir)
			staged = err == nil
		}
		f.SetMigration(hypervisor.MigrationInfo{Status: "completed", TotalTime: time.Second, RAMTotal: 1 << 27})
		return nil
	}
	if code, msg := post(t, srv.URL+"/migrate", `{"uri":"tcp:10.0.0.2:4444","targetNode":"node-2"}`); code != 202 {
		t.Fatalf("POST /migrate: %d %s", code, msg)
	}
	select {
	case r := <-out:
		out <- r
	case <-time.After(10 * time.Second):
		t.Fatal("loop did not end")
	}
	if got == nil || got.Hostname != "node-2" || !staged || len(got.AllowedPeers) != 0 {
		t.Fatalf("QEMU got TLS %+v (credentials there: %v), want the client side for node-2", got, staged)
	}
	if _, err := os.Stat(got.Dir); !os.IsNotExist(err) {
		t.Errorf("the staged credentials are still there: %v", err)
	}
	l.mu.Lock()
	host := l.migStatus.TLSHostname
	l.mu.Unlock()
	if host != "node-2" {
		t.Errorf("status tlsHostname %q", host)
	}
}

// TLS on and no certificate: the migration is refused with the reason and the guest runs on.
func TestMigrateFailsClosedWithFake(t *testing.T) {
	l, f, srv, _ := newFakeLauncher(t)
	l.tlsDir = filepath.Join(t.TempDir(), migrationtls.DirName)
	f.MigrateFunc = func(string, hypervisor.MigrationParams) error {
		t.Error("QEMU was asked to migrate without credentials")
		return nil
	}
	code, msg := post(t, srv.URL+"/migrate", `{"uri":"tcp:10.0.0.2:4444","targetNode":"node-2"}`)
	if code != 500 || !strings.Contains(msg, "this node has no migration certificate yet") {
		t.Errorf("POST /migrate: %d %s", code, msg)
	}
	if st := fakeStatus(t, srv.URL); st.QEMU != "running" || st.Migration == nil || st.Migration.Status != "failed" {
		t.Errorf("status %+v %+v", st, st.Migration)
	}
}

// A target with TLS on and no certificate does not start: the migration fails at once and
// the guest stays on its source.
func TestTargetFailsClosed(t *testing.T) {
	started := false
	b := backend{node: true,
		start: func(ctx, runCtx context.Context, cfg hypervisor.Config) (*startedVM, error) {
			started = true
			f := hypervisor.NewFake(cfg)
			return &startedVM{vm: f, hb: f, accel: "fake"}, nil
		},
		incoming: prepareIncoming,
	}
	runDir := t.TempDir()
	disk := filepath.Join(t.TempDir(), "disk.qcow2")
	os.WriteFile(disk, nil, 0o600)
	var log syncBuffer
	code := run(context.Background(), Options{VMName: "t", Disks: []string{disk}, RunDir: runDir, Incoming: true,
		MigrationTLSDir: filepath.Join(t.TempDir(), "none")}, &log, b)
	if code != ExitNoStart || started {
		t.Fatalf("exit %d (QEMU started: %v), want %d before QEMU; log:\n%s", code, started, ExitNoStart, log.String())
	}
	if msg := TerminationMessage(runDir); !strings.Contains(msg, "as a migration target: migration TLS is on, but this node has no migration certificate yet") {
		t.Errorf("termination message %q", msg)
	}

	// With credentials the target listens over TLS for Ferry nodes only, and the staged
	// copy is gone once QEMU has it.
	t.Setenv("FERRY_NODE_NAME", "node-2")
	var fake *hypervisor.Fake
	b.start = func(ctx, runCtx context.Context, cfg hypervisor.Config) (*startedVM, error) {
		fake = hypervisor.NewFake(cfg)
		return &startedVM{vm: fake, hb: fake, accel: "fake"}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- run(ctx, Options{VMName: "t", Disks: []string{disk}, RunDir: runDir, Incoming: true,
			MigrationTLSDir: nodeCredentials(t, "node-2", time.Now(), time.Hour)}, &log, b)
	}()
	waitUntil(t, 10*time.Second, "the target listening", func() bool {
		st, err := StatusOf(context.Background(), runDir)
		return err == nil && st.IncomingURI != ""
	})
	tls := fake.IncomingTLS()
	if tls == nil || len(tls.AllowedPeers) != 1 || tls.AllowedPeers[0] != "CN=system:ferry-node:*" || tls.Hostname != "" {
		t.Errorf("target TLS %+v", tls)
	} else if _, err := os.Stat(tls.Dir); !os.IsNotExist(err) {
		t.Errorf("the staged credentials outlived PrepareIncoming: %v", err)
	}
	if !strings.Contains(log.String(), "(TLS, peers CN=system:ferry-node:*)") {
		t.Errorf("log does not say the target waits over TLS:\n%s", log.String())
	}
	cancel()
	<-done
}

// Two real launchers migrate a booted guest over TLS with certificates of one CA; the
// source reports the target name it checked. (TestMigrationIdleGuest is the same in the
// clear: compare their logged times.)
func TestMigrationOverTLS(t *testing.T) {
	t.Setenv("FERRY_NODE_NAME", "") // one process plays both nodes
	now := time.Now()
	certPEM, keyPEM, err := migrationtls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := migrationtls.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, node := range []string{"node-a", "node-b"} {
		c, err := ca.NodeCredentials(node, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), migrationtls.DirName)
		if err := migrationtls.Write(dir, c); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	total, downtime := migrate(t, 0, MigrationRequest{MaxBandwidthBytes: 1 << 30, DowntimeLimitMs: 300, TargetNode: "node-b"}, dirs...)
	t.Logf("over TLS: total %v, downtime %v", total, downtime)
}
