// Package e2e runs whole-system tests on `ferry up` with real QEMU guests. scripts/test.sh
// builds bin/ferry and sets FERRY_BIN; the tests start one cluster and share it.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
)

// cluster is a running `ferry up`.
type cluster struct {
	bin      string
	stateDir string
	port     int
	nodes    int

	cmd    *exec.Cmd
	mu     sync.Mutex
	output bytes.Buffer
	done   chan struct{}
	c      client.Client
}

var cl *cluster

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	bin := os.Getenv("FERRY_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin/ferry")
	}
	if _, err := os.Stat(bin); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: no ferry binary at %s: run `make test` (it builds bin/ferry)\n", bin)
		return 1
	}
	dir, err := os.MkdirTemp("", "ferry-e2e-")
	if err != nil {
		panic(err)
	}
	cl = &cluster{bin: bin, stateDir: dir, port: 16443, nodes: 3}
	if err := cl.start(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		cl.stop()
		return 1
	}
	code := m.Run()
	if cl.cmd != nil {
		cl.stop()
	}
	if code == 0 && os.Getenv("FERRY_E2E_KEEP") == "" {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: state and logs kept in %s\n", dir)
	}
	return code
}

// start runs `ferry up` and waits until it says the cluster is up.
func (c *cluster) start() error {
	c.output.Reset()
	cmd := exec.Command(c.bin, "up", "--state-dir", c.stateDir, "--nodes", strconv.Itoa(c.nodes), "--port", strconv.Itoa(c.port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	c.cmd, c.done = cmd, make(chan struct{})
	up := make(chan struct{})
	go func() {
		s := bufio.NewScanner(out)
		once := sync.Once{}
		for s.Scan() {
			c.mu.Lock()
			c.output.WriteString(s.Text() + "\n")
			c.mu.Unlock()
			if strings.HasPrefix(s.Text(), "Ferry is up") {
				once.Do(func() { close(up) })
			}
		}
		_ = cmd.Wait()
		close(c.done)
	}()
	select {
	case <-up:
	case <-c.done:
		return fmt.Errorf("ferry up exited:\n%s", c.log())
	case <-time.After(3 * time.Minute):
		return fmt.Errorf("ferry up not up within 3m:\n%s", c.log())
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(c.stateDir, "control-plane", "admin.kubeconfig"))
	if err != nil {
		return err
	}
	c.c, err = client.New(cfg, client.Options{Scheme: controller.NewScheme()})
	return err
}

// stop sends SIGTERM and waits for `ferry up` to end; it returns how long that took.
func (c *cluster) stop() time.Duration {
	t := time.Now()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.cmd = nil
	return time.Since(t)
}

func (c *cluster) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.output.String()
}

// ferry runs a ferry command against the cluster and returns its output.
func ferry(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cl.bin, append([]string{"--state-dir", cl.stateDir}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
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

// eventually polls cond until it holds, failing the test after timeout with what it saw last.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, seen := cond()
		last = seen
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s; last seen: %s", what, timeout, last)
	}
}

func getVM(t *testing.T, name string) *v1alpha2.VirtualMachine {
	t.Helper()
	vm := &v1alpha2.VirtualMachine{}
	if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

func waitRunning(t *testing.T, name string, timeout time.Duration) *v1alpha2.VirtualMachine {
	t.Helper()
	var vm *v1alpha2.VirtualMachine
	eventually(t, timeout, "VM "+name+" Running", func() (bool, string) {
		vm = getVM(t, name)
		return vm.Status.Phase == v1alpha2.MachineRunning, fmt.Sprintf("phase %s %+v", vm.Status.Phase, vm.Status.Conditions)
	})
	return vm
}

var cntLine = regexp.MustCompile(`(?m)^CNT (\d+)\s*$`)

// guestCounters returns the heartbeat counters in the VM's serial output, in order.
func guestCounters(t *testing.T, vm string) []int {
	t.Helper()
	out, err := ferry(t, "v", "console", vm, "--log")
	if err != nil {
		return nil
	}
	var cnt []int
	for _, m := range cntLine.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		cnt = append(cnt, n)
	}
	return cnt
}

// waitHeartbeat waits until the guest has printed a counter above min and returns it.
func waitHeartbeat(t *testing.T, vm string, min int, timeout time.Duration) int {
	t.Helper()
	var last int
	eventually(t, timeout, fmt.Sprintf("guest %s counting past %d", vm, min), func() (bool, string) {
		c := guestCounters(t, vm)
		if len(c) == 0 {
			return false, "no heartbeat yet"
		}
		last = c[len(c)-1]
		return last > min, fmt.Sprintf("last CNT %d", last)
	})
	return last
}

// vmQEMUMarker is what a QEMU running VM vm in namespace default has on its command line.
func vmQEMUMarker(vm string) string {
	return "-name guest=default/" + vm + " "
}

// qemuProcesses lists the QEMU processes whose command line contains s.
func qemuProcesses(s string) []string {
	out, _ := exec.Command("pgrep", "-af", "qemu-system").Output()
	var found []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && strings.Contains(l, s) {
			found = append(found, l)
		}
	}
	return found
}
