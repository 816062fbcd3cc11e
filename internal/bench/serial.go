package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// TypeLine types line on the guest console at runDir/serial.sock and keeps the connection
// until expect appears in runDir/serial.log after what it held before (QEMU drops input
// still queued when the client hangs up).
func TypeLine(ctx context.Context, runDir, line, expect string) error {
	logPath := filepath.Join(runDir, hypervisor.SerialLogName)
	var off int64
	if fi, err := os.Stat(logPath); err == nil {
		off = fi.Size()
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(runDir, hypervisor.SerialSocketName))
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	for {
		if logContainsAfter(logPath, off, expect) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("typed %q on the console of %s: no %q in the serial log: %w", line, runDir, expect, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func logContainsAfter(path string, off int64, s string) bool {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return false
	}
	return bytes.Contains(b[off:], []byte(s))
}

// HeartbeatCheck follows the guest's serial log at path after a migration for up to
// window and says why the guest did not go on: it must print a counter above last and no
// boot line. It returns "" when the guest counted on.
func HeartbeatCheck(ctx context.Context, path string, last int64, window time.Duration) string {
	f := hypervisor.NewSerialFollower(path)
	deadline := time.Now().Add(window)
	for {
		f.Poll()
		if f.Booted() {
			return "the guest rebooted: FERRY-GUEST BOOTED in the new serial log " + path
		}
		n, _, ok := f.Heartbeat()
		if ok && n > last {
			return ""
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if !ok {
				return fmt.Sprintf("no heartbeat in %s within %s (source's last CNT %d)", path, window, last)
			}
			return fmt.Sprintf("heartbeat stuck at CNT %d in %s for %s (source's last CNT %d)", n, path, window, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitCounting waits until the guest whose serial log is at path printed CNT >= min.
func WaitCounting(ctx context.Context, path string, min int64, timeout time.Duration) error {
	f := hypervisor.NewSerialFollower(path)
	deadline := time.Now().Add(timeout)
	for {
		f.Poll()
		if n, _, ok := f.Heartbeat(); ok && n >= min {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("guest did not count to %d within %s (%s)", min, timeout, path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
