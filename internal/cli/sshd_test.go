package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// sshdPath finds an OpenSSH server for the end-to-end tests: $FERRY_TEST_SSHD, else the
// system's. Debian's openssh-server need not be installed (nor run as a service): its
// sshd unpacked with `apt-get download openssh-server; dpkg -x` serves as well.
func sshdPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("FERRY_TEST_SSHD"), "/usr/sbin/sshd"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	t.Skip("no sshd: install openssh-server, or set FERRY_TEST_SSHD to an sshd binary")
	return ""
}

// testSSHD runs `sshd -D` on 127.0.0.1 with a fresh host key, letting key in as root.
// It stands in for the guest's sshd.
func testSSHD(t *testing.T, dir, clientPub string) (port int) {
	t.Helper()
	sshd := sshdPath(t)
	if os.Geteuid() != 0 {
		t.Skip("sshd must run as root to log a user in")
	}
	// sshd refuses to start without its privilege separation directory (the package's
	// tmpfiles entry makes it at boot).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	hostKey := filepath.Join(dir, "host_ed25519")
	keygen(t, hostKey)
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, []byte(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	config := filepath.Join(dir, "sshd_config")
	os.WriteFile(config, []byte(fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
AuthorizedKeysFile %s
PidFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
`, port, hostKey, auth, filepath.Join(dir, "sshd.pid"))), 0o600)
	cmd := exec.Command(sshd, "-D", "-e", "-f", config)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", log.String())
		}
	})
	err = wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		select {
		case <-exited:
			return false, fmt.Errorf("sshd exited: %s", log.String())
		default:
		}
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		t.Fatalf("sshd did not listen on %d within 10s: %v: %s", port, err, log.String())
	}
	return port
}

// needSSHClient fails the test where the system ssh is missing: scripts/setup.sh installs it
// (openssh-client), and `ferry v ssh` is nothing without it.
func needSSHClient(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("no ssh client: run scripts/setup.sh (it installs openssh-client)")
	}
}

func keygen(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ferry-test", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
}

// ferryV runs `ferry v ARGS...` (this test binary as ferry, every VM at 127.0.0.1) and
// returns its stdout, stderr and exit code.
func ferryV(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := helperCommand(t, "127.0.0.1", append([]string{"v"}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// TestSSHAndSCPThroughPortForward logs in to a real sshd through `ferry v ssh`, whose
// ProxyCommand is `ferry v port-forward --stdio` (the direct transport to 127.0.0.1), and
// copies a file both ways with `ferry v scp`.
func TestSSHAndSCPThroughPortForward(t *testing.T) {
	needSSHClient(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	keygen(t, key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	port := testSSHD(t, dir, string(pub))
	knownHosts := filepath.Join(dir, "known_hosts")
	common := []string{"-i", key, "--transport", "direct", "--port", itoa(port)}
	sshOpts := []string{"--", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + knownHosts, "-o", "StrictHostKeyChecking=accept-new"}
	ssh := func(args ...string) (string, string, int) {
		return ferryV(t, append(append(append([]string{"ssh"}, args...), common...), sshOpts...)...)
	}

	out, errOut, code := ssh("root@linux-vm", "-c", "echo hello from $(whoami); echo to-stderr >&2")
	if code != 0 || out != "hello from root\n" || !strings.Contains(errOut, "to-stderr") {
		t.Fatalf("ferry v ssh -c: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	kh, _ := os.ReadFile(knownHosts)
	if !strings.HasPrefix(string(kh), "vm.linux-vm.default ") {
		t.Fatalf("known_hosts %q: want the host key under the alias vm.linux-vm.default", kh)
	}

	// The remote command's exit code is ferry's.
	if _, _, code := ssh("root@linux-vm", "-c", "exit 7"); code != 7 {
		t.Fatalf("exit code %d, want 7 (the remote command's)", code)
	}

	// scp there and back.
	src := filepath.Join(dir, "payload")
	payload := bytes.Repeat([]byte("ferry\n"), 100_000)
	os.WriteFile(src, payload, 0o644)
	remote := filepath.Join(dir, "remote-copy")
	scpArgs := func(a, b string) []string {
		return append(append([]string{"scp", a, b}, common...), sshOpts...)
	}
	if _, e, code := ferryV(t, scpArgs(src, "root@linux-vm:"+remote)...); code != 0 {
		t.Fatalf("scp to the VM: exit %d: %s", code, e)
	}
	back := filepath.Join(dir, "back")
	if _, e, code := ferryV(t, scpArgs("root@linux-vm:"+remote, back)...); code != 0 {
		t.Fatalf("scp from the VM: exit %d: %s", code, e)
	}
	if got, _ := os.ReadFile(back); !bytes.Equal(got, payload) {
		t.Fatalf("copied %d bytes there and back, got %d", len(payload), len(got))
	}
}

// TestSSHWarnsWhenTheVMsHostKeyChanges: a VM recreated under the same name has a new host
// key; with the alias keyed by name, ssh refuses as it would for any host.
func TestSSHWarnsWhenTheVMsHostKeyChanges(t *testing.T) {
	needSSHClient(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	keygen(t, key)
	pub, _ := os.ReadFile(key + ".pub")
	knownHosts := filepath.Join(dir, "known_hosts")
	run := func(port int) (string, int) {
		_, e, code := ferryV(t, "ssh", "root@db", "-n", "prod", "-c", "true", "-i", key, "--transport", "direct", "--port", itoa(port),
			"--", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "UserKnownHostsFile="+knownHosts, "-o", "StrictHostKeyChecking=accept-new")
		return e, code
	}
	first := t.TempDir()
	if e, code := run(testSSHD(t, first, string(pub))); code != 0 {
		t.Fatalf("first login: exit %d: %s", code, e)
	}
	second := t.TempDir() // a new sshd, a new host key: the "recreated" VM
	e, code := run(testSSHD(t, second, string(pub)))
	if code != 255 || !strings.Contains(e, "REMOTE HOST IDENTIFICATION HAS CHANGED") || !strings.Contains(e, "vm.db.prod") {
		t.Fatalf("login to a changed host key: exit %d, stderr %q; want ssh's refusal naming vm.db.prod", code, e)
	}
}

// TestSSHToAStoppedVM: the reason comes from ferry before ssh runs, not as ssh's
// "connection closed" after a failed ProxyCommand.
func TestSSHToAStoppedVM(t *testing.T) {
	for _, args := range [][]string{
		{"ssh", "cloud@db", "-n", "prod", "-c", "true"},
		{"scp", "./x", "cloud@db:/tmp/", "-n", "prod"},
	} {
		cmd := helperCommand(t, "stopped", append([]string{"v"}, args...)...)
		out, err := cmd.CombinedOutput()
		want := "VM prod/db is Stopped: only a Running VM can be reached (start it with `ferry v start -n prod db`)"
		if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), want) || strings.Contains(string(out), "Connection closed") {
			t.Errorf("%s: exit %d, %v, output %q; want ferry's reason only", args[0], cmd.ProcessState.ExitCode(), err, out)
		}
	}
}
