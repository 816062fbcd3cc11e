package nodeimage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The image as a node uses it: the real base layer (built when the cache has none: as
// root, ~1.5-2.5 min, network), written with bin/ferry, imported into a containerd of
// the test's own (Debian's containerd 1.6 and runc, configured as a real-kubelet node's:
// overlayfs, cgroupfs, restrict_oom_score_adj), listed under its ref in k8s.io, and run:
// QEMU, qemu-img and ferry start in it, and the entrypoint is ferry.
func TestImageRunsInContainerd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the node image test needs root: building the base layer (debootstrap, chroot) and running containerd")
	}
	for _, tool := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("no %s on PATH: the node image test runs containerd (apt-get install containerd runc; scripts/setup.sh installs them)", tool)
		}
	}
	bin := os.Getenv("FERRY_BIN")
	if bin == "" {
		bin = filepath.Join("..", "..", "bin", "ferry")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no ferry binary to put in the image (make build, or set FERRY_BIN): %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()

	start := time.Now()
	base, err := EnsureBase(ctx, testLog{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("base layer %s: %.1f s", base, time.Since(start).Seconds())

	const ref = "docker.io/ferryvm/ferry:nodeimage-test"
	out := filepath.Join(t.TempDir(), "ferry-image.tar")
	start = time.Now()
	if err := Write(ctx, out, ref, bin); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s: %d MiB in %.1f s", out, fi.Size()>>20, time.Since(start).Seconds())

	c := startContainerd(t)
	start = time.Now()
	if err := Import(ctx, c.address, out); err != nil {
		t.Fatal(err)
	}
	t.Logf("imported in %.1f s", time.Since(start).Seconds())
	if ls := c.ctr(t, "images", "ls", "--quiet"); !strings.Contains("\n"+ls+"\n", "\n"+ref+"\n") {
		t.Fatalf("ctr images ls does not list %s:\n%s", ref, ls)
	}
	// Again: the content and the snapshots are there already.
	start = time.Now()
	if err := Import(ctx, c.address, out); err != nil {
		t.Fatalf("importing the same image again: %v", err)
	}
	t.Logf("imported again in %.1f s", time.Since(start).Seconds())

	for _, run := range []struct {
		args []string // none: the image's entrypoint
		want string
	}{
		{[]string{"qemu-system-x86_64", "--version"}, "QEMU emulator version"},
		{[]string{"qemu-img", "--version"}, "qemu-img version"},
		{[]string{"ferry", "version"}, "ferry "},
		{nil, "ferry [command]"},
	} {
		got := c.run(t, ref, run.args...)
		if !strings.Contains(got, run.want) {
			t.Errorf("%q in the image printed %q, want %q in it", run.args, got, run.want)
		}
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// containerd is a containerd of the test's own: its root, state, sockets and config in
// a temp directory, nothing under /run/containerd or /var/lib/containerd but the
// shims' sockets (containerd 1.6 puts them in /run/containerd/s, named by a hash of
// this address).
type containerd struct {
	dir, address string
}

const containerdConfig = `version = 2
root = "{{dir}}/root"
state = "{{dir}}/state"
[grpc]
  address = "{{dir}}/containerd.sock"
[ttrpc]
  address = "{{dir}}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{{dir}}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # This machine's root lacks CAP_SYS_RESOURCE: no lowering of OOM scores.
  restrict_oom_score_adj = true
  # Another containerd's CRI may have the default port.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroup v1 here, and no systemd: cgroupfs, as kubelet's cgroupDriver.
        SystemdCgroup = false
`

func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir := t.TempDir()
	c := &containerd{dir: dir, address: filepath.Join(dir, "containerd.sock")}
	if len(c.address) > 100 {
		t.Fatalf("socket path %s is too long for a unix socket", c.address)
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(containerdConfig, "{{dir}}", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	// Registered after t.TempDir's removal, so it runs before it.
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		killShims(t, c.address)
		unmountUnder(t, dir)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Logf("containerd's log (last lines):\n%s", lastLines(string(b), 40))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := exec.Command("ctr", "--address", c.address, "version").Run(); err == nil {
			return c
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			t.Fatalf("containerd exited: %s", lastLines(string(b), 20))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("containerd did not answer within 20 s")
		}
	}
}

func (c *containerd) ctr(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("ctr", append([]string{"--address", c.address, "--namespace", Namespace}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("ctr %s: %v: %s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

var runs int

// run runs a container from ref to its end (ctr run --rm) and returns its output.
func (c *containerd) run(t *testing.T, ref string, args ...string) string {
	t.Helper()
	runs++
	id := fmt.Sprintf("ferry-nodeimage-test-%d-%d", os.Getpid(), runs)
	return c.ctr(t, append([]string{"run", "--rm",
		"--fifo-dir", filepath.Join(c.dir, "fifo"), "--runc-root", filepath.Join(c.dir, "runc"),
		ref, id}, args...)...)
}

// killShims ends the shims of this containerd that a failed run left (each names the
// containerd's address on its command line).
func killShims(t *testing.T, address string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		for _, a := range args {
			if a == address || a == "unix://"+address {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				t.Logf("killing a shim left behind (pid %d)", pid)
				syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}

// unmountUnder unmounts what is still mounted under dir (a container's rootfs after a
// failed run), deepest first, so that removing dir removes only the test's files.
func unmountUnder(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			mounts = append(mounts, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", m, err)
		}
	}
}
