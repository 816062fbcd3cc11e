package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// What a relay carries between its stdin/stdout and the VM's QEMU in the same run
// directory: `ferry-launcher console` and `ferry-launcher vnc`, which `ferry v console` and
// `ferry v vnc` run in the VM's launcher pod through pods/exec (or in-process, when the
// run directory is on the same machine). The sockets are unix sockets of the pod's run
// directory: QEMU listens on no network address for them.
const (
	// RelayConsole is the serial console: the last lines the guest wrote, then both ways.
	RelayConsole = "console"
	// RelayConsoleLog is what the guest wrote to its serial console so far.
	RelayConsoleLog = "console-log"
	// RelayVNC is the VM's screen, keyboard and mouse: the RFB protocol of QEMU's VNC server.
	RelayVNC = "vnc"
)

// Relay joins in and out to what kind names in runDir until either side ends or ctx ends.
func Relay(ctx context.Context, kind, runDir string, in io.Reader, out io.Writer) error {
	if runDir == "" {
		return errors.New("no run directory: give --run-dir or set FERRY_RUN_DIR")
	}
	switch kind {
	case RelayConsole:
		return hypervisor.Console(ctx, runDir, in, out)
	case RelayConsoleLog:
		f, err := os.Open(filepath.Join(runDir, hypervisor.SerialLogName))
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(out, f)
		return err
	case RelayVNC:
		return relaySocket(ctx, filepath.Join(runDir, hypervisor.VNCSocketName), in, out)
	}
	return fmt.Errorf("no relay %q: choose %s, %s or %s", kind, RelayConsole, RelayConsoleLog, RelayVNC)
}

// relaySocket copies in to the unix socket at path and the socket to out. The end of in
// is passed on as a half-close, and the relay returns once the socket's side ends: a
// client that is done sending still gets the answer.
func relaySocket(ctx context.Context, path string, in io.Reader, out io.Writer) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return err
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	go func() {
		if _, err := io.Copy(conn, in); err == nil {
			conn.CloseWrite()
		} else {
			conn.Close()
		}
	}()
	_, err = io.Copy(out, conn)
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
