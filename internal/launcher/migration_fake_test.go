package launcher

// The launcher's migration API and loop against the hypervisor fake: no QEMU.

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// newFakeLauncher returns a launcher around a running fake, its loop
// running in the background, and an HTTP server for its API.
func newFakeLauncher(t *testing.T) (*launcher, *hypervisor.Fake, *httptest.Server, chan [2]any) {
	f := hypervisor.NewFake(hypervisor.Config{Name: "fake"})
	l := newLauncher(Options{VMName: "fake", RunDir: t.TempDir()}, f, f, &logger{})
	l.memoryKiB = 131064
	srv := httptest.NewServer(l.handler())
	t.Cleanup(srv.Close)
	out := make(chan [2]any, 1)
	go func() {
		code, msg := l.loop(context.Background())
		out <- [2]any{code, msg}
	}()
	t.Cleanup(func() {
		l.requestStop("test over")
		<-out
	})
	return l, f, srv, out
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error
}

func fakeStatus(t *testing.T, url string) Status {
	t.Helper()
	resp, err := http.Get(url + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	json.NewDecoder(resp.Body).Decode(&st)
	return st
}

// (e) request validation.
func TestMigrateRequestValidation(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		errPart    string
	}{
		{"valid", `{"uri":"tcp:10.0.0.2:4444","maxBandwidthBytes":1073741824,"downtimeLimitMs":300,"autoConverge":true,"completionTimeoutSeconds":150,"progressTimeoutSeconds":150}`, 202, ""},
		{"valid ipv6", `{"uri":"tcp:[fd00::2]:4444"}`, 202, ""},
		{"valid hostname", `{"uri":"tcp:node-2:4444"}`, 202, ""},
		{"valid target node", `{"uri":"tcp:10.0.0.2:4444","targetNode":"node-2"}`, 202, ""},
		{"target node that is no node name", `{"uri":"tcp:10.0.0.2:4444","targetNode":"node-2,tls-authz=x"}`, 400, "targetNode"},
		{"not json", `uri=tcp:1.2.3.4:5`, 400, "bad migration request"},
		{"empty body", ``, 400, "bad migration request"},
		{"trailing data", `{"uri":"tcp:1.2.3.4:5"} {}`, 400, "trailing data"},
		{"unknown field", `{"uri":"tcp:1.2.3.4:5","bandwidth":1}`, 400, "unknown field"},
		{"wrong type", `{"uri":"tcp:1.2.3.4:5","downtimeLimitMs":"300ms"}`, 400, "downtimeLimitMs"},
		{"missing uri", `{}`, 400, "uri is required"},
		{"unix uri", `{"uri":"unix:/tmp/x.sock"}`, 400, "only tcp"},
		{"exec uri", `{"uri":"exec:cat > /tmp/x"}`, 400, "only tcp"},
		{"no port", `{"uri":"tcp:1.2.3.4"}`, 400, "missing port"},
		{"port 0", `{"uri":"tcp:1.2.3.4:0"}`, 400, "port must be 1-65535"},
		{"port too big", `{"uri":"tcp:1.2.3.4:70000"}`, 400, "port must be 1-65535"},
		{"empty host", `{"uri":"tcp::4444"}`, 400, "empty host"},
		{"comma", `{"uri":"tcp:1.2.3.4:5,x=y"}`, 400, "comma"},
		{"negative bandwidth", `{"uri":"tcp:1.2.3.4:5","maxBandwidthBytes":-1}`, 400, "maxBandwidthBytes"},
		{"negative downtime", `{"uri":"tcp:1.2.3.4:5","downtimeLimitMs":-5}`, 400, "downtimeLimitMs"},
		{"huge downtime", `{"uri":"tcp:1.2.3.4:5","downtimeLimitMs":3000000}`, 400, "downtimeLimitMs"},
		{"negative completion", `{"uri":"tcp:1.2.3.4:5","completionTimeoutSeconds":-1}`, 400, "completionTimeoutSeconds"},
		{"huge progress", `{"uri":"tcp:1.2.3.4:5","progressTimeoutSeconds":99999999999}`, 400, "progressTimeoutSeconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, f, srv, _ := newFakeLauncher(t)
			f.MigrateFunc = func(uri string, p hypervisor.MigrationParams) error {
				f.SetMigration(hypervisor.MigrationInfo{Status: "active", RAMTotal: 1 << 27, RAMRemaining: 1 << 26})
				return nil
			}
			code, msg := post(t, srv.URL+"/migrate", tc.body)
			if code != tc.code || !strings.Contains(msg, tc.errPart) {
				t.Errorf("POST /migrate %s: %d %q, want %d containing %q", tc.body, code, msg, tc.code, tc.errPart)
			}
			if tc.code != 202 {
				if st := fakeStatus(t, srv.URL); st.Migration != nil {
					t.Errorf("rejected request left a migration status: %+v", st.Migration)
				}
				return
			}
			// One at a time.
			if code, msg := post(t, srv.URL+"/migrate", `{"uri":"tcp:1.2.3.4:5"}`); code != 409 || !strings.Contains(msg, "already running") {
				t.Errorf("second POST /migrate: %d %q", code, msg)
			}
			if code, _ := post(t, srv.URL+"/migrate/cancel", ``); code != 202 {
				t.Errorf("POST /migrate/cancel: %d", code)
			}
		})
	}
	_, _, srv, _ := newFakeLauncher(t)
	if code, msg := post(t, srv.URL+"/migrate/cancel", ``); code != 409 || !strings.Contains(msg, "no migration") {
		t.Errorf("cancel without a migration: %d %q", code, msg)
	}
	if resp, err := http.Get(srv.URL + "/migrate"); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /migrate: %v %v", resp, err)
	}
}

// Defaults reach QEMU, and a completed migration ends the loop with
// ExitMigrated.
func TestMigrateCompletesWithFake(t *testing.T) {
	_, f, srv, out := newFakeLauncher(t)
	var got hypervisor.MigrationParams
	f.MigrateFunc = func(uri string, p hypervisor.MigrationParams) error {
		got = p
		f.SetMigration(hypervisor.MigrationInfo{Status: "completed", TotalTime: 1500 * time.Millisecond,
			Downtime: 40 * time.Millisecond, RAMTotal: 1 << 27, RAMTransferred: 3 << 20})
		return nil
	}
	if code, msg := post(t, srv.URL+"/migrate", `{"uri":"tcp:10.0.0.2:4444"}`); code != 202 {
		t.Fatalf("POST /migrate: %d %s", code, msg)
	}
	select {
	case r := <-out:
		if r[0] != ExitMigrated || r[1] != "migrated to tcp:10.0.0.2:4444: total 1.5s, downtime 40ms, 3 MiB sent" {
			t.Errorf("loop: %v", r)
		}
		out <- r // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("loop did not end")
	}
	want := hypervisor.MigrationParams{MaxBandwidth: DefaultMaxBandwidth, DowntimeLimit: DefaultDowntimeLimit}
	if got != want {
		t.Errorf("params %+v, want %+v", got, want)
	}
	if calls := f.Calls(); calls[len(calls)-1] != "Shutdown" {
		t.Errorf("calls %v: source not quit", calls)
	}
}

// The completion and progress timeouts cancel the migration and report it
// failed; a guest left paused is resumed.
func TestMigrateTimeoutsWithFake(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"completion", `{"uri":"tcp:1.2.3.4:5","completionTimeoutSeconds":1,"progressTimeoutSeconds":60}`, "did not converge within 1s"},
		{"progress", `{"uri":"tcp:1.2.3.4:5","progressTimeoutSeconds":1}`, "no progress for 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, f, srv, _ := newFakeLauncher(t)
			f.MigrateFunc = func(uri string, p hypervisor.MigrationParams) error {
				f.SetMigration(hypervisor.MigrationInfo{Status: "active", RAMTotal: 1 << 27, RAMRemaining: 1 << 26, RAMTransferred: 1 << 20})
				return nil
			}
			t0 := time.Now()
			if code, msg := post(t, srv.URL+"/migrate", tc.body); code != 202 {
				t.Fatalf("POST /migrate: %d %s", code, msg)
			}
			var st Status
			waitUntil(t, 10*time.Second, "migration end", func() bool {
				st = fakeStatus(t, srv.URL)
				return st.Migration != nil && st.Migration.Finished()
			})
			m := st.Migration
			if m.Status != "failed" || !strings.Contains(m.Error, tc.want) || m.TotalBytes != 1<<27 || m.TotalTimeMs < 900 {
				t.Errorf("migration %+v after %v", *m, time.Since(t0))
			}
			if d := time.Since(t0); d < time.Second || d > 5*time.Second {
				t.Errorf("cancelled after %v", d)
			}
			if st.QEMU != "running" {
				t.Errorf("fake %s", st.QEMU)
			}
		})
	}

	t.Run("paused after failure", func(t *testing.T) {
		_, f, srv, _ := newFakeLauncher(t)
		f.MigrateFunc = func(uri string, p hypervisor.MigrationParams) error {
			f.SetStatus("paused")
			f.SetMigration(hypervisor.MigrationInfo{Status: "failed", Error: "Unable to write to socket"})
			return nil
		}
		if code, msg := post(t, srv.URL+"/migrate", `{"uri":"tcp:1.2.3.4:5"}`); code != 202 {
			t.Fatalf("POST /migrate: %d %s", code, msg)
		}
		waitUntil(t, 10*time.Second, "resume", func() bool {
			return strings.Contains(strings.Join(f.Calls(), ","), "Resume")
		})
		st := fakeStatus(t, srv.URL)
		if st.QEMU != "running" || st.Migration.Status != "failed" || st.Migration.Error != "Unable to write to socket" {
			t.Errorf("status %+v, migration %+v", st, st.Migration)
		}
	})
}

// The completion timeout with real QEMU: QEMU reports "cancelled", the
// launcher "failed" with the reason, and the guest stays.
func TestMigrationCompletionTimeout(t *testing.T) {
	img := guestImage(t)
	disk := overlay(t, img) + ":qcow2"
	src, srcDir := startVM(t, Options{VMName: "slow", Memory: "128Mi", Disks: []string{disk}})
	pollStatus(t, src, srcDir, 90*time.Second, "source heartbeat >= 2", func(s Status) bool { return s.Heartbeat >= 2 })
	dst, dstDir := startVM(t, Options{VMName: "slow", Memory: "128Mi", Disks: []string{disk}, Incoming: true})
	dstSt := pollStatus(t, dst, dstDir, 60*time.Second, "target incomingURI", func(s Status) bool { return s.IncomingURI != "" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := MigrationRequest{URI: dstSt.IncomingURI, MaxBandwidthBytes: 4 << 20, CompletionTimeoutSeconds: 2}
	if err := StartMigration(ctx, srcDir, req); err != nil {
		t.Fatalf("StartMigration: %v", err)
	}
	checkSourceSurvived(t, src, srcDir, "failed")
	st := statusNow(t, srcDir)
	if !strings.Contains(st.Migration.Error, "did not converge within 2s") || st.Migration.TotalTimeMs < 2000 {
		t.Errorf("migration %+v", *st.Migration)
	}
	if !strings.Contains(src.log.String(), "cancelling the migration") {
		t.Errorf("log:\n%s", src.log)
	}
}

// A stop request during a migration cancels it first.
func TestStopDuringMigrationWithFake(t *testing.T) {
	l, f, srv, out := newFakeLauncher(t)
	f.MigrateFunc = func(uri string, p hypervisor.MigrationParams) error {
		f.SetMigration(hypervisor.MigrationInfo{Status: "active", RAMTotal: 1 << 27, RAMRemaining: 1 << 26})
		return nil
	}
	if code, msg := post(t, srv.URL+"/migrate", `{"uri":"tcp:1.2.3.4:5"}`); code != 202 {
		t.Fatalf("POST /migrate: %d %s", code, msg)
	}
	l.requestStop("test")
	select {
	case r := <-out:
		if r[0] != ExitStopped {
			t.Errorf("loop: %v", r)
		}
		out <- r
	case <-time.After(10 * time.Second):
		t.Fatal("loop did not end")
	}
	if calls := strings.Join(f.Calls(), ","); !strings.Contains(calls, "CancelMigration,Shutdown") {
		t.Errorf("calls %s", calls)
	}
	if st := fakeStatus(t, srv.URL); st.Migration == nil || st.Migration.Status != "cancelled" {
		t.Errorf("migration %+v", st.Migration)
	}
}
