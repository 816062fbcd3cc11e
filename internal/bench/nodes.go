package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// FerryNode runs `ferry --state-dir STATE node VERB NODE`.
func FerryNode(ctx context.Context, bin, stateDir, verb, node string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, "--state-dir", stateDir, "node", verb, node)
	cmd.Env = os.Environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ferry node %s %s: %w: %s", verb, node, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func SetUnschedulable(ctx context.Context, c client.Client, node string, on bool) error {
	n := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
		return err
	}
	if n.Spec.Unschedulable == on {
		return nil
	}
	patch := client.MergeFrom(n.DeepCopy())
	n.Spec.Unschedulable = on
	return c.Patch(ctx, n, patch)
}

// SimNodes is a running `ferry sim-nodes`.
type SimNodes struct {
	cmd  *exec.Cmd
	Dir  string
	done chan struct{}
}

// StartSimNodes runs `ferry sim-nodes` (its log in the state directory) with n nodes and
// extra flags.
func StartSimNodes(ctx context.Context, bin string, cl *Cluster, n int, say func(string, ...any), extra ...string) (*SimNodes, error) {
	dir := filepath.Join(cl.StateDir, "sim")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(cl.StateDir, "sim-nodes.log"))
	if err != nil {
		return nil, err
	}
	args := append([]string{"sim-nodes", "--kubeconfig", cl.Kubeconfig, "--count", strconv.Itoa(n), "--state-dir", dir}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	s := &SimNodes{cmd: cmd, Dir: dir, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(s.done) }()
	say("Started %d simulated nodes (pid %d, log %s)", n, cmd.Process.Pid, logf.Name())
	return s, nil
}

func (s *SimNodes) Stop() { stopProcess(s.cmd, s.done, 30*time.Second) }

// WaitNodesReady waits until at least n nodes are Ready.
func WaitNodesReady(ctx context.Context, c client.Client, say func(string, ...any), n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var nodes corev1.NodeList
		ready := 0
		if err := c.List(ctx, &nodes); err == nil {
			for _, nd := range nodes.Items {
				for _, c := range nd.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
		}
		if ready >= n {
			say("%d nodes Ready", ready)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes Ready after %s", ready, n, timeout)
		}
		if err := Sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}
