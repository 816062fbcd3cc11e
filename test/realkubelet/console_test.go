package realkubelet

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/up"
)

// TestConsoleAndVNC: on real kubelets `ferry v console` and `ferry v vnc` reach the VM's
// QEMU through the Kubernetes API (pods/exec of `ferry-launcher console|vnc` in its
// launcher pod): the launcher's run directory is not on this machine's filesystem, so
// the CLI cannot take ferry up's local path.
func TestConsoleAndVNC(t *testing.T) {
	waitRunning(t, vmName, 3*time.Minute)
	ref := vmName + ".default" // d8's VM.NAMESPACE form

	// The guest's serial output so far, and the console both ways: "net" typed there is
	// answered by the test guest with a NET line.
	eventually(t, 2*time.Minute, "console --log showing the guest's counter", func() (bool, string) {
		out, err := ferry(t, "v", "console", ref, "--log")
		return err == nil && cnt.MatchString(out), out
	})
	eventually(t, time.Minute, "the guest answering on its console", func() (bool, string) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--state-dir", stateDir, "v", "console", ref, "--transport", "exec")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+up.KubeconfigPath(stateDir))
		cmd.Stdin = strings.NewReader("net\n")
		out, err := cmd.CombinedOutput()
		return err == nil && strings.Contains(string(out), "NET "), string(out)
	})

	// VNC: d8's machine-readable proxy mode, then a viewer's first bytes.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--state-dir", stateDir, "v", "vnc", ref, "--proxy-only")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+up.KubeconfigPath(stateDir))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("ferry v vnc --proxy-only printed %q: %v", line, err)
	}
	var proxy struct{ Port int }
	if err := json.Unmarshal([]byte(line), &proxy); err != nil || proxy.Port == 0 {
		t.Fatalf("ferry v vnc --proxy-only printed %q: %v", line, err)
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(proxy.Port)), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	banner := make([]byte, 12)
	if _, err := io.ReadFull(c, banner); err != nil || string(banner) != "RFB 003.008\n" {
		t.Fatalf("VNC through the kubelet's exec: %q, %v; want QEMU's RFB 003.008", banner, err)
	}
}
