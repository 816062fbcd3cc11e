package hypervisor

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// vmShape is the interface suggested in the package doc; both the real
// Instance and the Fake must satisfy it.
type vmShape interface {
	PID() int
	RunDir() string
	Done() <-chan struct{}
	Status(ctx context.Context) (string, error)
	Shutdown(ctx context.Context, grace time.Duration) error
	Kill()
	Wait() (guestShutdown bool, err error)
	PrepareIncoming(ctx context.Context, uri string, tls *MigrationTLS) error
	MigrateOut(ctx context.Context, uri string, p MigrationParams) error
	MigrationStatus(ctx context.Context) (MigrationInfo, error)
	WaitMigration(ctx context.Context, interval time.Duration) (MigrationInfo, error)
	CancelMigration(ctx context.Context) error
}

var (
	_ vmShape = (*Instance)(nil)
	_ vmShape = (*Fake)(nil)
	_         = []interface {
		Heartbeat() (int64, time.Time, bool)
		Booted() bool
	}{(*SerialFollower)(nil), (*Fake)(nil)}
)

func TestFake(t *testing.T) {
	ctx := context.Background()
	src := NewFake(Config{Name: "src"})
	dst := NewFake(Config{Name: "dst", Incoming: true})
	if st, _ := dst.Status(ctx); st != "inmigrate" {
		t.Fatalf("dst status %q", st)
	}
	if err := src.PrepareIncoming(ctx, "tcp:x:1", nil); err == nil {
		t.Error("PrepareIncoming on a non-incoming fake succeeded")
	}
	if err := dst.PrepareIncoming(ctx, "tcp:127.0.0.1:4444", nil); err != nil {
		t.Fatal(err)
	}
	if err := src.MigrateOut(ctx, dst.IncomingURI(), DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	info, err := src.WaitMigration(ctx, 0)
	if err != nil || info.Status != "completed" {
		t.Fatalf("WaitMigration = %+v, %v", info, err)
	}
	dst.FinishIncoming()
	if st, _ := src.Status(ctx); st != "postmigrate" {
		t.Errorf("src status %q", st)
	}
	if st, _ := dst.Status(ctx); st != "running" {
		t.Errorf("dst status %q", st)
	}
	src.Shutdown(ctx, time.Second)
	if g, err := src.Wait(); g || err != nil {
		t.Errorf("src Wait = %v, %v", g, err)
	}
	dst.Crash("signal: killed")
	var ee *ExitError
	if g, err := dst.Wait(); g || !errors.As(err, &ee) {
		t.Errorf("dst Wait = %v, %v", g, err)
	}

	f := NewFake(Config{})
	f.MigrateFunc = func(uri string, p MigrationParams) error {
		f.SetMigration(MigrationInfo{Status: "active"})
		return nil
	}
	f.MigrateOut(ctx, "tcp:a:1", MigrationParams{})
	f.CancelMigration(ctx)
	if info, _ := f.MigrationStatus(ctx); info.Status != "cancelled" {
		t.Errorf("after cancel: %+v", info)
	}
	f.Tick()
	if n, _, ok := f.Heartbeat(); n != 1 || !ok || !f.Booted() {
		t.Errorf("heartbeat %d %v", n, ok)
	}
	f.GuestPowerOff()
	if g, err := f.Wait(); !g || err != nil {
		t.Errorf("poweroff Wait = %v, %v", g, err)
	}
	if len(f.Calls()) != 2 {
		t.Errorf("calls %v", f.Calls())
	}
}

func TestSerialFollower(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/serial.log"
	f := NewSerialFollower(path)
	if err := f.Poll(); err != nil { // missing file is fine
		t.Fatal(err)
	}
	write := func(s string, appendMode bool) {
		t.Helper()
		if err := writeFileMode(path, s, appendMode); err != nil {
			t.Fatal(err)
		}
	}
	write("SeaBIOS\r\nFERRY-GUEST BOOTED\r\nCNT 1\r\nCNT 2\r\nCN", false)
	f.Poll()
	if n, _, ok := f.Heartbeat(); n != 2 || !ok || !f.Booted() {
		t.Fatalf("got %d %v booted=%v", n, ok, f.Booted())
	}
	write("T 3\r\nIP 10.0.2.15\r\n", true)
	f.Poll()
	if n, _, _ := f.Heartbeat(); n != 3 || f.IP() != "10.0.2.15" {
		t.Fatalf("got %d ip %q", n, f.IP())
	}
	write("CNT 7\r\n", false) // truncated and rewritten
	f.Poll()
	if n, _, _ := f.Heartbeat(); n != 7 {
		t.Fatalf("after truncation got %d", n)
	}
}

func writeFileMode(path, s string, appendMode bool) error {
	flag := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if appendMode {
		flag = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
