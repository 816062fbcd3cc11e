package up

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// Node network layout when running as root: a bridge in the host namespace and, per node,
// a namespace joined to it by a veth pair. All addresses are the project's own.
const (
	bridgeName = "ferry0"
	bridgeAddr = "10.66.0.1"
	nodeSubnet = 24
)

// nodeNet is one node's network identity.
type nodeNet struct {
	Name      string // node name
	Namespace string // network namespace, "" on loopback
	IP        string
}

// vmNetwork is the VM network mode: VMs get NICs when nodes have namespaces of their own
// (as root); on shared loopback they could not be told apart.
func vmNetwork(netns bool) string {
	if netns {
		return "routed"
	}
	return "none"
}

func nodeNamespace(node string) string { return "ferry-" + node }

// isNodeLink tells the host end of a node's veth pair (fv1, fv2, …) by its name.
func isNodeLink(name string) bool {
	n, ok := strings.CutPrefix(name, "fv")
	if !ok || n == "" {
		return false
	}
	for _, r := range n {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// planNodes names the nodes and their addresses: node-1 … node-N.
func planNodes(n int, netns bool) []nodeNet {
	out := make([]nodeNet, n)
	for i := range n {
		name := fmt.Sprintf("node-%d", i+1)
		if netns {
			out[i] = nodeNet{Name: name, Namespace: nodeNamespace(name), IP: fmt.Sprintf("10.66.0.%d", 11+i)}
		} else {
			// The whole 127.0.0.0/8 is loopback: each node still gets an address of its own.
			out[i] = nodeNet{Name: name, IP: fmt.Sprintf("127.0.0.%d", 11+i)}
		}
	}
	return out
}

func ip(args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %s", strings.Join(args, " "), strings.TrimSpace(stderr.String()))
	}
	return nil
}

// checkVMRanges refuses VM ranges that overlap the node network (the bridge's subnet): a
// VM address there would shadow a node's.
func checkVMRanges(vmRanges []netip.Prefix) error {
	nodes := netip.PrefixFrom(netip.MustParseAddr(bridgeAddr), nodeSubnet).Masked()
	for _, p := range vmRanges {
		if p.Overlaps(nodes) {
			return fmt.Errorf("--ip-range: VM address range %s overlaps the node network %s of --netns: choose ranges outside it", p, nodes)
		}
	}
	return nil
}

// setupNetwork creates the bridge and each node's namespace (idempotent: leftovers of a
// run that died are removed first).
//
// Every VM range is on-link on the bridge: the host (standing in for the router of a real
// node network) asks the link for a VM's address, and the node that runs the VM answers
// (package vmnet). The agents ready their own side.
func setupNetwork(nodes []nodeNet, vmRanges []netip.Prefix) error {
	if err := checkVMRanges(vmRanges); err != nil {
		return err
	}
	teardownNetwork(nodes)
	steps := [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", fmt.Sprintf("%s/%d", bridgeAddr, nodeSubnet), "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	}
	for _, p := range vmRanges {
		steps = append(steps, []string{"route", "replace", p.String(), "dev", bridgeName, "src", bridgeAddr})
	}
	for i, n := range nodes {
		host := fmt.Sprintf("fv%d", i+1)
		steps = append(steps,
			[]string{"netns", "add", n.Namespace},
			[]string{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", n.Namespace},
			[]string{"link", "set", host, "master", bridgeName},
			[]string{"link", "set", host, "up"},
			[]string{"-n", n.Namespace, "link", "set", "lo", "up"},
			[]string{"-n", n.Namespace, "addr", "add", fmt.Sprintf("%s/%d", n.IP, nodeSubnet), "dev", "eth0"},
			[]string{"-n", n.Namespace, "link", "set", "eth0", "up"},
			[]string{"-n", n.Namespace, "route", "add", "default", "via", bridgeAddr},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return fmt.Errorf("setting up node networks: %w", err)
		}
	}
	return nil
}

// teardownNetwork removes what setupNetwork made, and any node namespace of an earlier
// run (which may have had more nodes); errors for missing pieces are ignored.
func teardownNetwork(nodes []nodeNet) {
	names := map[string]bool{}
	for _, n := range nodes {
		if n.Namespace != "" {
			names[n.Namespace] = true
		}
	}
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], nodeNamespace("node-")) {
				names[f[0]] = true
			}
		}
	}
	// The host ends of the veth pairs first: deleting a namespace deletes its end only
	// once the kernel frees the namespace, which a node's dead TCP connections can delay
	// by minutes (a real-kubelet node's), and a new run could not make its links until then.
	if links, err := os.ReadDir("/sys/class/net"); err == nil {
		for _, l := range links {
			if isNodeLink(l.Name()) {
				_ = ip("link", "del", l.Name())
			}
		}
	}
	for ns := range names {
		_ = ip("netns", "del", ns)
	}
	_ = ip("link", "del", bridgeName)
}
