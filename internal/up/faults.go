package up

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/ferryvm/ferry/internal/watchdog"
)

// Fault injection on the nodes of a running `ferry up`, for demonstrations, tests and
// benchmarks: what a failed node looks like to the cluster.

// NodeDir is where a node of `ferry up` keeps its state; every process of the node names it.
func NodeDir(stateDir, node string) string { return filepath.Join(stateDir, "nodes", node) }

func poweredOffFile(stateDir, node string) string {
	return filepath.Join(NodeDir(stateDir, node), "powered-off")
}

func checkNode(stateDir, node string) error {
	if strings.ContainsAny(node, "/ ") || node == "" {
		return fmt.Errorf("%q is not a node name", node)
	}
	if _, err := os.Stat(NodeDir(stateDir, node)); err != nil {
		return fmt.Errorf("no node %s in %s (is ferry up running there?)", node, stateDir)
	}
	return nil
}

// PowerOff cuts a node's power: every process of the node (agent, launchers, QEMUs, its
// watchdog) is killed at once, and `ferry up` does not restart the agent until PowerOn.
func PowerOff(stateDir, node string) ([]int, error) {
	if err := checkNode(stateDir, node); err != nil {
		return nil, err
	}
	if err := os.WriteFile(poweredOffFile(stateDir, node), nil, 0o644); err != nil {
		return nil, err
	}
	return watchdog.KillNode(NodeDir(stateDir, node), os.Getpid())
}

// PowerOn lets `ferry up` start the node's agent again: the node boots and rejoins.
func PowerOn(stateDir, node string) error {
	if err := checkNode(stateDir, node); err != nil {
		return err
	}
	if err := os.Remove(poweredOffFile(stateDir, node)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// hostLink is the host end of a node's veth pair (see setupNetwork).
func hostLink(node string) (string, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(node, "node-"))
	if err != nil || !strings.HasPrefix(node, "node-") {
		return "", fmt.Errorf("%q is not a node of ferry up (node-N)", node)
	}
	link := fmt.Sprintf("fv%d", n)
	if _, err := os.Stat(filepath.Join("/sys/class/net", link)); err != nil {
		return "", fmt.Errorf("node %s has no network namespace of its own (ferry up --netns): it cannot be cut off", node)
	}
	return link, nil
}

// Disconnect cuts a node off the network: its processes keep running, but reach nothing.
func Disconnect(stateDir, node string) error {
	if err := checkNode(stateDir, node); err != nil {
		return err
	}
	link, err := hostLink(node)
	if err != nil {
		return err
	}
	return ip("link", "set", link, "down")
}

// Connect gives a disconnected node its network back.
func Connect(stateDir, node string) error {
	if err := checkNode(stateDir, node); err != nil {
		return err
	}
	link, err := hostLink(node)
	if err != nil {
		return err
	}
	return ip("link", "set", link, "up")
}

// agentPID finds the node's agent process.
func agentPID(stateDir, node string) (int, error) {
	dir := NodeDir(stateDir, node)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		// The agent that renews the fencing Lease and feeds the watchdog, not a stand-in
		// kubelet beside it (up --split-agent).
		if isAgent(args) && slices.Contains(args, dir) && !slices.Contains(args, "--role=kubelet") {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("the agent of node %s is not running", node)
}

// Freeze stops the node's agent (SIGSTOP): it neither renews its Lease nor feeds its
// watchdog, while its VMs keep running.
func Freeze(stateDir, node string) (int, error) {
	if err := checkNode(stateDir, node); err != nil {
		return 0, err
	}
	pid, err := agentPID(stateDir, node)
	if err != nil {
		return 0, err
	}
	return pid, syscall.Kill(pid, syscall.SIGSTOP)
}

// Thaw lets a frozen agent go on (SIGCONT).
func Thaw(stateDir, node string) (int, error) {
	if err := checkNode(stateDir, node); err != nil {
		return 0, err
	}
	pid, err := agentPID(stateDir, node)
	if err != nil {
		return 0, err
	}
	return pid, syscall.Kill(pid, syscall.SIGCONT)
}

// isAgent tells whether a process's arguments are a node agent's: ferry-agent, or
// `ferry agent` (releases before it).
func isAgent(args []string) bool {
	switch {
	case len(args) > 1 && filepath.Base(args[0]) == AgentBinary:
		return true
	case len(args) > 2 && args[1] == "agent":
		return true
	}
	return false
}
