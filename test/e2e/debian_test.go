package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/guestimage"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// The Debian guest's objects, in the shape of Deckhouse's user guide: an image fetched over
// HTTP, a 10Gi disk made from it, and a VM that cloud-init provisions from its userData.
const debianManifests = `apiVersion: virtualization.deckhouse.io/v1alpha2
kind: ClusterVirtualImage
metadata:
  name: debian-12-e2e
spec:
  dataSource:
    type: HTTP
    http:
      url: %s
---
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualDisk
metadata:
  name: debian-root
  namespace: default
spec:
  persistentVolumeClaim:
    size: 10Gi
  dataSource:
    type: ObjectRef
    objectRef:
      kind: ClusterVirtualImage
      name: debian-12-e2e
---
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachine
metadata:
  name: debian
  namespace: default
spec:
  runPolicy: AlwaysOn
  cpu:
    cores: 1
  memory:
    size: 1Gi
  provisioning:
    type: UserData
    userData: |
%s
  blockDeviceRefs:
    - kind: VirtualDisk
      name: debian-root
`

// The user-data: a user with the test's key, and a marker that runcmd appends to, once
// per provisioning (cloud-init runs runcmd once per instance-id).
const debianUserData = `#cloud-config
users:
  - name: tester
    shell: /bin/bash
    sudo: ALL=(ALL) NOPASSWD:ALL
    ssh_authorized_keys:
      - %s
runcmd:
  - [sh, -c, 'date +%%s >> /var/lib/e2e-provisioned']
`

const (
	debianVM   = "debian"
	debianUser = "tester"
	// A ticker line every 50 ms from the guest; python3 comes with cloud-init.
	tickerCmd = `exec python3 -u -c 'import time;i=0
while 1: print(i,flush=True);i+=1;time.sleep(0.05)'`
)

// debianGuest is the one Debian VM the subtests share, and what they learned about it.
type debianGuest struct {
	key        string // the private key's path
	ip         string
	uid        string
	hostKey    string // the ed25519 host key sshd presents
	instanceID string
	bootID     string
}

// TestDebianGuest boots one real Debian cloud image and takes it through the platform's
// moves: a live migration and a drain with an SSH session open, the loss of its node, and
// a kernel panic. The subtests run in order on the same guest; one that fails stops the
// rest (each needs the state the previous left).
func TestDebianGuest(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the Debian guest test needs root: building the image, and reaching the VM's address (node network namespaces)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	img, err := guestimage.EnsureDebian(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	g := &debianGuest{key: sshKey(t)}
	pub, err := os.ReadFile(g.key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	userData := fmt.Sprintf(debianUserData, strings.TrimSpace(string(pub)))
	if len(userData) > 2048 {
		t.Fatalf("user-data is %d bytes, the API takes at most 2048", len(userData))
	}
	url := serveFile(t, img)
	t.Cleanup(func() {
		deleteVM(t, debianVM)
		_, _ = ferry(t, "k", "delete", "cvi", "debian-12-e2e", "--wait=true", "--timeout=1m", "--ignore-not-found")
	})

	applied := time.Now()
	apply(t, fmt.Sprintf(debianManifests, url, indent(userData, "      ")))
	steps := []struct {
		name string
		run  func(*debianGuest, *testing.T)
	}{
		{"boot", func(g *debianGuest, t *testing.T) { g.boot(t, applied) }},
		{"spoof-another-vm", (*debianGuest).spoof},
		{"evict-with-ssh-session", (*debianGuest).evict},
		{"drain-with-ssh-session", (*debianGuest).drain},
		{"node-poweroff", (*debianGuest).nodeLoss},
		{"guest-panic", (*debianGuest).guestPanic},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.run(g, t) }) {
			return
		}
	}
}

// spoof: the guest's root sends a UDP datagram to the host from another VM's address (the
// sample VM's, added to its NIC), then one from its own: its tap's guard lets only the
// second through.
func (g *debianGuest) spoof(t *testing.T) {
	other := waitRunning(t, "linux-vm", 2*time.Minute).Status.IPAddress
	pc, err := net.ListenPacket("udp4", "10.66.0.1:0") // the host's end of the node bridge
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	send := func(from, what string) string {
		return fmt.Sprintf(`python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('%s', 0)); s.sendto(b'%s', ('10.66.0.1', %d))"`, from, what, port)
	}
	script := fmt.Sprintf("sudo ip addr add %s/32 dev eth0 && sudo %s; sudo ip addr del %s/32 dev eth0; %s",
		other, send(other, "spoofed"), other, send(g.ip, "own"))
	g.mustSSH(t, script)
	// The two take the same path: once the second is in, the first would have come before.
	_ = pc.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 64)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no datagram from the guest's own address %s: %v", g.ip, err)
		}
		got := string(buf[:n])
		if got == "spoofed" {
			t.Fatalf("a datagram from the guest as VM linux-vm (%s) reached the host, from %s", other, from)
		}
		if got == "own" {
			t.Logf("from %s: %q; the one sent as %s (linux-vm) was dropped at the guest's tap", from, got, other)
			return
		}
	}
}

// boot: the image is imported, the VM runs, the guest agent reports Debian, sshd answers
// on the VM's address, cloud-init made the user and grew the root filesystem to the disk.
func (g *debianGuest) boot(t *testing.T, applied time.Time) {
	eventually(t, 3*time.Minute, "image debian-12-e2e Ready as qcow2", func() (bool, string) {
		var cvi v1alpha2.ClusterVirtualImage
		if err := cl.c.Get(t.Context(), client.ObjectKey{Name: "debian-12-e2e"}, &cvi); err != nil {
			return false, err.Error()
		}
		return cvi.Status.Phase == v1alpha2.ImageReady && cvi.Status.Format == "qcow2",
			fmt.Sprintf("%s %s %+v", cvi.Status.Phase, cvi.Status.Format, cvi.Status.Conditions)
	})
	var vd v1alpha2.VirtualDisk
	eventually(t, 2*time.Minute, "disk debian-root Ready", func() (bool, string) {
		if err := cl.c.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: "debian-root"}, &vd); err != nil {
			return false, err.Error()
		}
		return vd.Status.Phase == v1alpha2.ImageReady, fmt.Sprintf("%s %+v", vd.Status.Phase, vd.Status.Conditions)
	})
	t.Logf("image and disk ready after %s (capacity %s)", since(applied), vd.Status.Capacity)

	vm := waitRunning(t, debianVM, 3*time.Minute)
	g.ip, g.uid = vm.Status.IPAddress, string(vm.UID)
	running := since(applied)
	g.waitAgent(t, 5*time.Minute)
	agent := since(applied)
	if id := vmField(t, "{.status.guestOSInfo.id}"); id != "debian" {
		t.Errorf("guestOSInfo.id = %q, want debian", id)
	}
	pretty := vmField(t, "{.status.guestOSInfo.prettyName}")
	if !strings.Contains(pretty, "Debian GNU/Linux 12") {
		t.Errorf("guestOSInfo.prettyName = %q, want Debian GNU/Linux 12", pretty)
	}
	kernel := vmField(t, "{.status.guestOSInfo.kernelRelease}")
	if !strings.HasSuffix(kernel, "-cloud-amd64") {
		t.Errorf("guestOSInfo.kernelRelease = %q, want Debian's cloud kernel", kernel)
	}
	waitSSHBanner(t, g.ip, 3*time.Minute)
	banner := since(applied)

	// cloud-init adds the user after sshd starts: the login works a little later.
	eventually(t, 3*time.Minute, "ferry v ssh runs a command in the guest", func() (bool, string) {
		// A known_hosts of the test's own: each run's VM has new host keys.
		o, err := ferry(t, "v", "ssh", "-i", g.key, "--local-ssh-opts=-oUserKnownHostsFile="+filepath.Join(filepath.Dir(g.key), "known_hosts"),
			"-c", "cat /etc/os-release", debianUser+"@"+debianVM)
		return err == nil && strings.Contains(o, "ID=debian"), fmt.Sprintf("%v: %s", err, lastLines(o, 3))
	})
	login := since(applied)
	t.Logf("Running after %s, AgentReady after %s (%s, %s), sshd answers after %s, ferry v ssh logs in after %s",
		running, agent, pretty, kernel, banner, login)

	status := g.mustSSH(t, "cloud-init status --wait >/dev/null; cloud-init status")
	if !strings.Contains(status, "status: done") {
		t.Errorf("cloud-init: %s", status)
	}
	size, err := strconv.Atoi(strings.TrimSpace(g.mustSSH(t, "df -BG --output=size / | tail -n1 | tr -dc 0-9")))
	if err != nil || size <= 8 {
		t.Errorf("root filesystem is %dG (%v), want the 10Gi disk's ~10G: growpart did not grow it", size, err)
	}
	g.instanceID = g.mustSSH(t, "sudo cloud-init query instance_id")
	if g.instanceID != g.uid {
		t.Errorf("cloud-init's instance-id is %q, want the VM's UID %s", g.instanceID, g.uid)
	}
	if n := g.mustSSH(t, "wc -l < /var/lib/e2e-provisioned"); n != "1" {
		t.Errorf("runcmd's marker has %s lines, want 1", n)
	}
	g.hostKey = hostKey(t, g.ip)
	g.bootID = g.mustSSH(t, "cat /proc/sys/kernel/random/boot_id")
	t.Logf("root filesystem %dG, instance-id %s", size, g.instanceID)
}

// evict: an SSH session printing a line every 50 ms stays open through a live migration,
// of the idle guest and of the guest with a process dirtying 256 MiB of its memory.
func (g *debianGuest) evict(t *testing.T) {
	g.evictOnce(t, "idle")
	// stress-ng keeps rewriting 256 MiB until it is killed (or its timeout ends).
	g.mustSSH(t, "nohup stress-ng --vm 1 --vm-bytes 256M --vm-keep --timeout 600 >/dev/null 2>&1 </dev/null & sleep 3; pgrep -c stress-ng")
	g.evictOnce(t, "dirtying 256 MiB")
	g.mustSSH(t, "pkill stress-ng; true")
}

func (g *debianGuest) evictOnce(t *testing.T, load string) {
	s := g.startTicker(t)
	from := getVM(t, debianVM).Status.NodeName
	started := time.Now()
	op := newEvict(t, debianVM)
	ended, reason := waitOpEnd(t, op, v1alpha2.OpCompleted)
	if reason != v1alpha2.ReasonMigrationCompleted {
		t.Errorf("evict (%s) ended with reason %s", load, reason)
	}
	took := since(started)
	to := g.assertMoved(t, from)
	figures := ""
	if m := ended.Status.Migration; m != nil {
		figures = fmt.Sprintf(", vmop status: transfer %d ms, downtime %d ms", m.TransferMs, m.DowntimeMs)
	}
	// What the source's QEMU itself reported, as its launcher logged it: the operation's
	// status must carry the same figures.
	if line := assertMigrationFigures(t, ended, debianVM, started); line != "" {
		figures += "; source launcher: " + line
	}
	s.assertAlive(t, fmt.Sprintf("Evict (%s, 1Gi) %s → %s in %s end to end%s", load, from, to, took, figures))
}

// drain: the same session through `kubectl drain` of the VM's node.
func (g *debianGuest) drain(t *testing.T) {
	s := g.startTicker(t)
	node := getVM(t, debianVM).Status.NodeName
	t.Cleanup(func() { _, _ = ferry(t, "k", "uncordon", node) })
	started := time.Now()
	out := mustFerry(t, "k", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data")
	if !strings.Contains(out, "node/"+node+" drained") {
		t.Errorf("drain said:\n%s", out)
	}
	took := since(started)
	to := g.assertMoved(t, node)
	s.assertAlive(t, fmt.Sprintf("drain of %s (VM to %s) in %s; source launcher: %s", node, to, took, migratedLine(t, debianVM, started)))
	mustFerry(t, "k", "uncordon", node)
}

// nodeLoss: the VM's node loses power; the VM boots again on another node from the same
// disk, and cloud-init sees the same instance: no second provisioning, same host key, the
// data written before is there.
func (g *debianGuest) nodeLoss(t *testing.T) {
	data := g.mustSSH(t, "echo written-$(date +%s%N) > ~/before-poweroff && sync && cat ~/before-poweroff")
	node := getVM(t, debianVM).Status.NodeName
	mustFerry(t, "node", "poweroff", node)
	poweredOn := false
	powerOn := func() {
		if !poweredOn {
			poweredOn = true
			if out, err := ferry(t, "node", "poweron", node); err != nil {
				t.Errorf("ferry node poweron %s: %v: %s", node, err, out)
			}
		}
	}
	t.Cleanup(powerOn)
	t0 := time.Now()

	var after *v1alpha2.VirtualMachine
	eventually(t, 3*time.Minute, "VM Running on another node", func() (bool, string) {
		after = getVM(t, debianVM)
		return after.Status.Phase == v1alpha2.MachineRunning && after.Status.NodeName != node,
			fmt.Sprintf("%s on %s", after.Status.Phase, after.Status.NodeName)
	})
	elsewhere := since(t0)
	if after.Status.IPAddress != g.ip {
		t.Errorf("address changed: %s → %s", g.ip, after.Status.IPAddress)
	}
	g.waitAgent(t, 5*time.Minute)
	g.waitLogin(t, 3*time.Minute)
	t.Logf("%s powered off: VM Running on %s after %s, SSH login after %s", node, after.Status.NodeName, elsewhere, since(t0))

	if b := g.mustSSH(t, "cat /proc/sys/kernel/random/boot_id"); b == g.bootID {
		t.Errorf("boot id unchanged (%s): the guest did not boot again", b)
	} else {
		g.bootID = b
	}
	if got := g.mustSSH(t, "cat ~/before-poweroff"); got != data {
		t.Errorf("file written before the power loss: %q, want %q", got, data)
	}
	g.mustSSH(t, "cloud-init status --wait >/dev/null || true")
	if id := g.mustSSH(t, "sudo cloud-init query instance_id"); id != g.instanceID {
		t.Errorf("instance-id %q, before %q: cloud-init saw a new instance", id, g.instanceID)
	}
	if n := g.mustSSH(t, "wc -l < /var/lib/e2e-provisioned"); n != "1" {
		t.Errorf("runcmd's marker has %s lines: cloud-init provisioned again", n)
	}
	if k := hostKey(t, g.ip); k != g.hostKey {
		t.Errorf("SSH host key changed:\n%s\nbefore:\n%s", k, g.hostKey)
	}

	powerOn()
	eventually(t, 90*time.Second, "node "+node+" Ready again", func() (bool, string) { return nodeReady(t, node) })
}

// guestPanic: a kernel panic in the guest is reported (phase Degraded, Running=False with
// reason GuestPanicked) and, the VM being AlwaysOn, it runs and answers again.
func (g *debianGuest) guestPanic(t *testing.T) {
	w := watchVMStatus(t, debianVM)
	// The watch shows the VM as it is first: from then on it misses no change.
	if !w.waitFor("", 30*time.Second) {
		t.Fatal("kubectl get vm -w printed nothing within 30s")
	}
	t0 := time.Now()
	// The session dies with the kernel: its result says nothing.
	go func() { _, _ = g.ssh(t, "sudo sh -c 'echo c > /proc/sysrq-trigger'", 20*time.Second) }()

	if !w.waitFor("Degraded/GuestPanicked", 2*time.Minute) {
		vm := getVM(t, debianVM)
		t.Fatalf("no phase Degraded with Running reason GuestPanicked within 2m; seen %v; now %s %+v",
			w.seen(), vm.Status.Phase, meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionRunning))
	}
	degraded := since(t0)
	waitRunning(t, debianVM, 3*time.Minute)
	running := since(t0)
	g.waitAgent(t, 5*time.Minute)
	g.waitLogin(t, 3*time.Minute)
	if b := g.mustSSH(t, "cat /proc/sys/kernel/random/boot_id"); b == g.bootID {
		t.Errorf("boot id unchanged after the panic (%s)", b)
	}
	t.Logf("panic: Degraded/GuestPanicked after %s, Running again after %s, SSH login after %s; statuses seen: %v",
		degraded, running, since(t0), w.seen())
}

// assertMoved waits until the VM runs on a node other than from, with its address, and
// returns that node.
func (g *debianGuest) assertMoved(t *testing.T, from string) string {
	t.Helper()
	vm := waitRunning(t, debianVM, time.Minute)
	if vm.Status.NodeName == from {
		t.Errorf("VM still on %s", from)
	}
	if vm.Status.IPAddress != g.ip {
		t.Errorf("address changed: %s → %s", g.ip, vm.Status.IPAddress)
	}
	return vm.Status.NodeName
}

func (g *debianGuest) waitAgent(t *testing.T, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "condition AgentReady True", func() (bool, string) {
		s := vmField(t, `{.status.conditions[?(@.type=="AgentReady")].status}`)
		return s == "True", s
	})
}

func (g *debianGuest) waitLogin(t *testing.T, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "SSH login to "+g.ip, func() (bool, string) {
		out, err := g.ssh(t, "true", 20*time.Second)
		return err == nil, fmt.Sprintf("%v %s", err, out)
	})
}

// sshArgs are the test's own ssh client's arguments to run cmd in the guest. The guest's
// host key is checked apart (hostKey), so none is remembered.
func (g *debianGuest) sshArgs(cmd string) []string {
	return []string{"-T", "-i", g.key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
		"-l", debianUser, g.ip, cmd}
}

// ssh runs cmd in the guest over a direct connection to its address and returns stdout.
func (g *debianGuest) ssh(t *testing.T, cmd string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "ssh", g.sshArgs(cmd)...)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

func (g *debianGuest) mustSSH(t *testing.T, cmd string) string {
	t.Helper()
	out, err := g.ssh(t, cmd, 3*time.Minute)
	if err != nil {
		t.Fatalf("ssh %s: %v\n%s", cmd, err, out)
	}
	return out
}

// vmField reads a field of the Debian VM that the typed API may not have yet.
func vmField(t *testing.T, jsonpath string) string {
	t.Helper()
	out, err := ferry(t, "k", "get", "vm", debianVM, "-o", "jsonpath="+jsonpath)
	if err != nil {
		return fmt.Sprintf("(%v: %s)", err, strings.TrimSpace(out))
	}
	return strings.TrimSpace(out)
}

// waitSSHBanner waits until sshd itself answers on addr:22 (a TCP accept alone could come
// from anything on the path).
func waitSSHBanner(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "sshd answering on "+addr+":22", func() (bool, string) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "22"), 3*time.Second)
		if err != nil {
			return false, err.Error()
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err := bufio.NewReader(c).ReadString('\n')
		return strings.HasPrefix(l, "SSH-2.0-"), fmt.Sprintf("%q %v", l, err)
	})
}

// hostKey is the ed25519 key the guest's sshd presents.
func hostKey(t *testing.T, addr string) string {
	t.Helper()
	out, err := exec.Command("ssh-keyscan", "-T", "10", "-t", "ed25519", addr).Output()
	if err != nil || !strings.Contains(string(out), "ssh-ed25519 ") {
		t.Fatalf("ssh-keyscan %s: %v: %s", addr, err, out)
	}
	return strings.TrimSpace(string(out))
}

// sshKey makes the key the VM's user logs in with.
func sshKey(t *testing.T) string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ferry-e2e", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	return key
}

// serveFile serves one file over HTTP on loopback, as a web server would serve an image.
func serveFile(t *testing.T, path string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := "/" + filepath.Base(path)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != name {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, path)
	})}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Logf("image server: %v", err)
		}
	}()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + name
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix)
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// migratedLine is the "migrated to ..." line (QEMU's total time, downtime and bytes) that a
// source launcher of vm logged after since, from the nodes' run directories.
// assertMigrationFigures checks that a completed migration's operation reports the
// transfer time and downtime its source's QEMU reported, as the source's launcher logged
// them (it once reported a downtime of 0 ms for every migration, the figures lost when the
// launcher exited before its report was relayed). It returns the launcher's line, or "".
func assertMigrationFigures(t *testing.T, op *v1alpha2.VirtualMachineOperation, vm string, since time.Time) string {
	t.Helper()
	line := migratedLine(t, vm, since)
	total, downtime, ok := launcherpod.ParseMigrationSummary("migrated to " + line)
	if !ok {
		return line
	}
	if m := op.Status.Migration; m == nil || m.TransferMs != total.Milliseconds() || m.DowntimeMs != downtime.Milliseconds() {
		t.Errorf("vmop %s reports %+v; the source's QEMU reported transfer %v, downtime %v", op.Name, m, total, downtime)
	}
	return line
}

func migratedLine(t *testing.T, vm string, since time.Time) string {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(cl.stateDir, "nodes", "*", "pods", "*", "launcher.log"))
	marker := "VM default/" + vm + ": migrated to "
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			i := strings.Index(l, marker)
			if i < 0 {
				continue
			}
			if at, err := time.Parse(time.RFC3339Nano, strings.Fields(l)[0]); err == nil && at.After(since) {
				return l[i+len(marker):]
			}
		}
	}
	return ""
}
