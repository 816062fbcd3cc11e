package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubeletexec "k8s.io/cri-streaming/pkg/streaming/remotecommand"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/launcher"
)

// launcherInContainer is the container runtime's side of `ferry-launcher console|vnc`, as
// a kubelet's streaming server drives it: the relay runs in-process on the pod's run
// directory, as the command does in the launcher's container.
type launcherInContainer struct {
	runDir string
	mu     sync.Mutex
	seen   []string // "pod/container: command"
}

func (l *launcherInContainer) ExecInContainer(ctx context.Context, pod, uid, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser,
	tty bool, resize <-chan kubeletexec.TerminalSize, timeout time.Duration) error {
	l.mu.Lock()
	l.seen = append(l.seen, pod+"/"+container+": "+strings.Join(cmd, " "))
	l.mu.Unlock()
	// ferry-launcher, or `ferry launcher` in pods of releases before it.
	args := cmd
	switch {
	case len(cmd) > 0 && cmd[0] == "ferry-launcher":
		args = cmd[1:]
	case len(cmd) > 1 && cmd[0] == "ferry" && cmd[1] == "launcher":
		args = cmd[2:]
	}
	kind := ""
	switch {
	case len(args) == len(cmd):
		return fmt.Errorf("unexpected command %q", cmd)
	case slices.Equal(args, []string{"console"}), slices.Equal(args, []string{"vnc"}):
		kind = args[0]
	case slices.Equal(args, []string{"console", "--log"}):
		kind = launcher.RelayConsoleLog
	default:
		return fmt.Errorf("unexpected command %q", cmd)
	}
	if err := launcher.Relay(ctx, kind, l.runDir, in, out); err != nil {
		fmt.Fprintf(errOut, "Error: %v\n", err)
		return fmt.Errorf("command terminated with exit code 1")
	}
	return nil
}

// echoGuest is a boot sector that writes "R\n" to the first serial port, then echoes what
// it reads there with the case of letters flipped: a guest with a serial console and
// nothing else, for QEMU under TCG.
var echoGuest = []byte{
	0xBA, 0xF8, 0x03, // mov dx, 0x3f8
	0xB0, 'R', 0xEE, // mov al, 'R'; out dx, al
	0xB0, '\n', 0xEE, // mov al, '\n'; out dx, al
	0xBA, 0xFD, 0x03, // loop: mov dx, 0x3fd (line status)
	0xEC,       // wait: in al, dx
	0xA8, 0x01, // test al, 1 (data ready)
	0x74, 0xFB, // jz wait
	0xBA, 0xF8, 0x03, // mov dx, 0x3f8
	0xEC,       // in al, dx
	0x34, 0x20, // xor al, 0x20
	0xEE,       // out dx, al
	0xEB, 0xEF, // jmp loop
}

// startEchoGuest runs echoGuest in QEMU as the launcher runs a VM (package hypervisor: its
// serial console and VNC display on unix sockets of the run directory) and returns that
// directory once the guest has written to its console.
func startEchoGuest(t *testing.T) string {
	t.Helper()
	disk := make([]byte, 1<<20)
	copy(disk, echoGuest)
	disk[510], disk[511] = 0x55, 0xAA
	dir := t.TempDir()
	img := filepath.Join(dir, "boot.img")
	if err := os.WriteFile(img, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short: the run directory is not under the test's temp dir.
	run, err := os.MkdirTemp("", "ferry-relay-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, err := hypervisor.Start(ctx, hypervisor.Config{Name: "relay-test", RunDir: run, Accel: "tcg", MemoryKiB: hypervisor.SafeMemoryKiB(32 << 10),
		Disks: []hypervisor.Disk{{Path: img, Format: "raw"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); <-inst.Done() })
	var b []byte
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		b, _ = os.ReadFile(filepath.Join(run, hypervisor.SerialLogName))
		return bytes.Contains(b, []byte("R\n")), nil
	})
	if err != nil {
		t.Fatalf("the guest wrote nothing to its console in 30s: %q", b)
	}
	return run
}

// rfbHandshake speaks RFB 3.8 as a viewer up to the server's ServerInit and returns the
// desktop's size and name: what a VNC viewer needs before it shows a screen.
func rfbHandshake(t *testing.T, c io.ReadWriter) (w, h uint16, name string) {
	t.Helper()
	r := bufio.NewReader(c)
	banner := make([]byte, 12)
	if _, err := io.ReadFull(r, banner); err != nil || string(banner) != "RFB 003.008\n" {
		t.Fatalf("banner %q, %v; want RFB 003.008", banner, err)
	}
	io.WriteString(c, "RFB 003.008\n")
	n, err := r.ReadByte()
	if err != nil || n == 0 {
		t.Fatalf("security types: %d, %v", n, err)
	}
	types := make([]byte, n)
	io.ReadFull(r, types)
	if !bytes.Contains(types, []byte{1}) {
		t.Fatalf("security types %v lack None", types)
	}
	c.Write([]byte{1})
	var result uint32
	if err := binary.Read(r, binary.BigEndian, &result); err != nil || result != 0 {
		t.Fatalf("security result %d, %v", result, err)
	}
	c.Write([]byte{1}) // ClientInit: shared
	var init struct {
		W, H    uint16
		Pixel   [16]byte
		NameLen uint32
	}
	if err := binary.Read(r, binary.BigEndian, &init); err != nil {
		t.Fatalf("ServerInit: %v", err)
	}
	nb := make([]byte, init.NameLen)
	if _, err := io.ReadFull(r, nb); err != nil {
		t.Fatalf("desktop name: %v", err)
	}
	return init.W, init.H, string(nb)
}

// TestConsoleAndVNCThroughTheAPI: `ferry v console` and `ferry v vnc` reach a VM's QEMU
// through pods/exec of `ferry-launcher console|vnc` in its launcher pod, over websockets
// and over SPDY, as on a real cluster: the guest's console both ways, its serial log, and
// a VNC viewer's handshake up to the desktop's size and name. A pod of a release before
// ferry-launcher gets `ferry launcher console`.
func TestConsoleAndVNCThroughTheAPI(t *testing.T) {
	run := startEchoGuest(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "virt-launcher-db-abcde"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "compute", Command: []string{"ferry-launcher"}, Args: []string{"--vm", "db"}}}}}
	oldPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "virt-launcher-db-fghij"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "compute", Command: []string{"ferry"}, Args: []string{"launcher", "--vm", "db"}}}}}
	for _, websockets := range []bool{true, false} {
		t.Run(fmt.Sprintf("websockets=%v", websockets), func(t *testing.T) {
			runtime := &launcherInContainer{runDir: run}
			tr, err := newExecTransport(fakeAPIServer(t, runtime, websockets))
			if err != nil {
				t.Fatal(err)
			}
			r := &relays{exec: tr, mode: relayAuto}
			ctx := context.Background()

			// The serial log, as --log prints it.
			s, err := r.open(ctx, pod, launcher.RelayConsoleLog)
			if err != nil {
				t.Fatal(err)
			}
			s.CloseWrite()
			if b, err := io.ReadAll(s); err != nil || !bytes.HasPrefix(b, []byte("R\n")) {
				t.Fatalf("console --log: %q, %v", b, err)
			}

			// The console both ways, from a pipe: typed input reaches the guest and its
			// answer comes back before the relay lets go.
			s, err = r.open(ctx, pod, launcher.RelayConsole)
			if err != nil {
				t.Fatal(err)
			}
			in, typing, _ := os.Pipe()
			go func() {
				io.WriteString(typing, "hello")
				typing.Close()
			}()
			var out bytes.Buffer
			if err := attachTerminal(ctx, s, in, &out); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(out.String(), "R\n") || !strings.Contains(out.String(), "HELLO") {
				t.Fatalf("console: %q; want the log's tail, then the guest's answer HELLO", out.String())
			}

			// VNC: a viewer on the local port `ferry v vnc` serves.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			vctx, stop := context.WithCancel(ctx)
			served := make(chan error, 1)
			go func() {
				served <- serveVNC(vctx, ln, func(ctx context.Context) (Stream, error) { return r.open(ctx, pod, launcher.RelayVNC) })
			}()
			for range 2 { // a viewer may reconnect
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(20 * time.Second))
				w, h, name := rfbHandshake(t, c)
				c.Close()
				if w == 0 || h == 0 || name != "QEMU (relay-test)" {
					t.Fatalf("ServerInit: %dx%d %q; want the screen of QEMU (relay-test)", w, h, name)
				}
			}
			stop()
			if err := <-served; err != nil {
				t.Fatal(err)
			}

			// The serial log of an earlier release's pod.
			s, err = r.open(ctx, oldPod, launcher.RelayConsoleLog)
			if err != nil {
				t.Fatal(err)
			}
			s.CloseWrite()
			if b, err := io.ReadAll(s); err != nil || !bytes.HasPrefix(b, []byte("R\n")) {
				t.Fatalf("console --log of an earlier release's pod: %q, %v", b, err)
			}

			want := []string{"console --log", "console", "vnc", "vnc"}
			runtime.mu.Lock()
			seen := slices.Clone(runtime.seen)
			runtime.mu.Unlock()
			for i := range want {
				want[i] = "virt-launcher-db-abcde/compute: ferry-launcher " + want[i]
			}
			want = append(want, "virt-launcher-db-fghij/compute: ferry launcher console --log")
			if !slices.Equal(seen, want) {
				t.Fatalf("execs %q, want %q", seen, want)
			}
		})
	}
}

// TestRelayOnThisMachine: under `ferry up` the stand-in kubelet names the pod's run
// directory, which is on this machine, and serves no exec: the relay runs in-process.
// --transport exec insists on the API path, --transport local refuses a pod elsewhere.
func TestRelayOnThisMachine(t *testing.T) {
	run := startEchoGuest(t)
	noExec := execFunc(func(ctx context.Context, ns, pod string, cmd []string) (Stream, error) {
		return nil, fmt.Errorf("no exec here (asked for %q)", cmd)
	})
	here := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "virt-launcher-vm-x", Annotations: map[string]string{v1alpha2.AnnotationRunDir: run}}}
	elsewhere := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "virt-launcher-vm-y", Annotations: map[string]string{v1alpha2.AnnotationRunDir: "/nonexistent/run"}}}
	ctx := context.Background()

	s, err := (&relays{exec: noExec, mode: relayAuto}).open(ctx, here, launcher.RelayVNC)
	if err != nil {
		t.Fatal(err)
	}
	banner := make([]byte, 12)
	if _, err := io.ReadFull(s, banner); err != nil || string(banner) != "RFB 003.008\n" {
		t.Fatalf("VNC on this machine: %q, %v", banner, err)
	}
	s.Close()

	if _, err := (&relays{exec: noExec, mode: relayLocal}).open(ctx, elsewhere, launcher.RelayVNC); err == nil || !strings.Contains(err.Error(), "--transport exec") {
		t.Errorf("--transport local for a pod elsewhere: %v", err)
	}
	if _, err := (&relays{exec: noExec, mode: relayExec}).open(ctx, here, launcher.RelayConsole); err == nil || !strings.Contains(err.Error(), "no exec here") {
		t.Errorf("--transport exec: %v; want the exec path taken", err)
	}
	if _, err := (&relays{exec: noExec, mode: relayAuto}).open(ctx, elsewhere, launcher.RelayConsole); err == nil || !strings.Contains(err.Error(), "no exec here") {
		t.Errorf("auto for a pod elsewhere: %v; want the exec path taken", err)
	}
}

// execFunc is an exec transport in a function.
type execFunc func(ctx context.Context, namespace, pod string, command []string) (Stream, error)

func (f execFunc) run(ctx context.Context, namespace, pod string, command []string) (Stream, error) {
	return f(ctx, namespace, pod, command)
}

// TestUntilEscape: Ctrl+] ends what a terminal sends; what came before it in the same
// read still goes.
func TestUntilEscape(t *testing.T) {
	u := &untilEscape{r: strings.NewReader("ls\r\x1dafter")}
	b, err := io.ReadAll(u)
	if string(b) != "ls\r" || err != errEscape {
		t.Fatalf("read %q, %v; want \"ls\\r\" and the escape", b, err)
	}
	if n, err := u.Read(make([]byte, 8)); n != 0 || err != errEscape {
		t.Fatalf("read after the escape: %d, %v", n, err)
	}
}
