// Package realkubelet runs the seed's three scenarios, and the install, upgrade and
// uninstall of deploy/, on `ferry up --kubelet=real`: three nodes, each a real kubelet with
// containerd and kube-proxy, Ferry running on them from deploy/base. scripts/test.sh builds
// bin/ferry and the node binaries (make node-bins) and sets FERRY_BIN; it needs root.
package realkubelet

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/up"
)

// The cluster all tests share.
var (
	bin, stateDir, repo string
	kc                  client.Client
	upCmd               *exec.Cmd
	upOut               lockedBuffer
	upDone              = make(chan struct{})
	// setUp is how long `ferry up --kubelet=real` took to say it is up.
	setUp time.Duration
)

const port = 16443

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "realkubelet: real-kubelet nodes need root (network, mount and PID namespaces, containerd)")
		return 1
	}
	repo, _ = filepath.Abs("../..")
	bin = os.Getenv("FERRY_BIN")
	if bin == "" {
		bin = filepath.Join(repo, "bin", "ferry")
	}
	for _, b := range []string{bin, filepath.Join(filepath.Dir(bin), "kubelet"), filepath.Join(filepath.Dir(bin), "ferry-pause")} {
		if _, err := os.Stat(b); err != nil {
			fmt.Fprintf(os.Stderr, "realkubelet: no %s: run `make build node-bins` (make test does)\n", b)
			return 1
		}
	}
	var err error
	if stateDir, err = os.MkdirTemp("", "ferry-realkubelet-"); err != nil {
		panic(err)
	}
	code := func() int {
		if err := startUp(); err != nil {
			fmt.Fprintln(os.Stderr, "realkubelet:", err)
			fmt.Fprintln(os.Stderr, upOut.String())
			return 1
		}
		return m.Run()
	}()
	stopUp()
	if code == 0 && os.Getenv("FERRY_E2E_KEEP") == "" {
		os.RemoveAll(stateDir)
	} else {
		fmt.Fprintf(os.Stderr, "realkubelet: state and logs kept in %s\n", stateDir)
	}
	return code
}

func startUp() error {
	t0 := time.Now()
	upCmd = exec.Command(bin, "--state-dir", stateDir, "up", "--kubelet=real", "--nodes", "3", "--port", fmt.Sprint(port))
	upCmd.Stdout, upCmd.Stderr = &upOut, &upOut
	upCmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := upCmd.Start(); err != nil {
		return err
	}
	go func() { _ = upCmd.Wait(); close(upDone) }()
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 8*time.Minute, true, func(context.Context) (bool, error) {
		select {
		case <-upDone:
			return false, fmt.Errorf("ferry up exited")
		default:
		}
		return strings.Contains(upOut.String(), "Ferry is up"), nil
	})
	if err != nil {
		return fmt.Errorf("ferry up --kubelet=real: %w", err)
	}
	setUp = time.Since(t0)
	cfg, err := clientcmd.BuildConfigFromFlags("", up.KubeconfigPath(stateDir))
	if err != nil {
		return err
	}
	scheme := controller.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return err
	}
	kc, err = client.New(cfg, client.Options{Scheme: scheme})
	return err
}

func stopUp() {
	if upCmd == nil || upCmd.Process == nil {
		return
	}
	_ = upCmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-upDone:
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-upCmd.Process.Pid, syscall.SIGKILL)
		<-upDone
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ferry runs the ferry CLI on the cluster.
func ferry(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--state-dir", stateDir}, args...)...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "KUBECONFIG="+up.KubeconfigPath(stateDir))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustFerry(t *testing.T, args ...string) string {
	t.Helper()
	out, err := ferry(t, args...)
	if err != nil {
		t.Fatalf("ferry %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// eventually polls cond until it holds or timeout passes; then it fails with what cond
// last said.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	last := ""
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, msg := cond()
		last = msg
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not after %s (%s)", what, timeout, last)
	}
}

func getVM(t *testing.T, name string) *v1alpha2.VirtualMachine {
	t.Helper()
	var vm v1alpha2.VirtualMachine
	if err := kc.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: name}, &vm); err != nil {
		t.Fatalf("get vm %s: %v", name, err)
	}
	return &vm
}

func waitRunning(t *testing.T, name string, timeout time.Duration) *v1alpha2.VirtualMachine {
	t.Helper()
	var vm *v1alpha2.VirtualMachine
	eventually(t, timeout, "VM "+name+" Running", func() (bool, string) {
		vm = getVM(t, name)
		return vm.Status.Phase == v1alpha2.MachineRunning && vm.Status.NodeName != "", fmt.Sprintf("%s on %q", vm.Status.Phase, vm.Status.NodeName)
	})
	return vm
}

// qemus lists the QEMU processes of VM default/name on the whole machine: every node's
// containers are processes of it.
func qemus(name string) []string {
	out, _ := exec.Command("pgrep", "-af", "qemu-system").Output()
	var found []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "-name guest=default/"+name+" ") {
			found = append(found, sc.Text())
		}
	}
	return found
}

// watchVMs runs `ferry k get vm -w` (what the seed has the user watch) until stop is
// called, which returns its output.
func watchVMs(t *testing.T) (stop func() string) {
	t.Helper()
	var out lockedBuffer
	cmd := exec.Command(bin, "--state-dir", stateDir, "k", "get", "vm", "-w")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	// The watch prints the current state first.
	eventually(t, 30*time.Second, "kubectl get vm -w printing", func() (bool, string) {
		return strings.Count(out.String(), "\n") >= 2, out.String()
	})
	return func() string {
		_ = cmd.Process.Kill()
		<-done
		return out.String()
	}
}
