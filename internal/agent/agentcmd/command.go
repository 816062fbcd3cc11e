// Package agentcmd is the node agent's command line, shared by ferry-agent (the process of
// each node: the agent DaemonSet's pods, ferry up's nodes) and `ferry agent` (which agent
// DaemonSets of earlier releases run). It links Kubernetes' client, not its control plane
// nor Ferry's controllers, so that each node's agent starts small.
package agentcmd

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/ipam"
	"github.com/ferryvm/ferry/internal/logtime"
)

// New is the agent command named use.
func New(use string) *cobra.Command {
	var kubeconfig, labels, vmNetwork, role string
	o := agent.Options{}
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run a node's agent (a DaemonSet on a real cluster; a process per node under ferry up)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = zap.New(func(o *zap.Options) { o.TimeEncoder = logtime.Encoder }).WithValues("node", o.NodeName)
			ctrl.SetLogger(o.Log)
			if o.NodeName == "" || o.NodeIP == "" {
				return fmt.Errorf("--node-name and --node-ip are required")
			}
			var err error
			if o.Role, err = kubelet.ParseRole(role); err != nil {
				return fmt.Errorf("--%w", err)
			}
			switch vmNetwork {
			case v1alpha2.VMNetworkRouted:
			case v1alpha2.VMNetworkNone:
				o.VMRange = ""
			default:
				return fmt.Errorf("--vm-network %q: use %s or %s", vmNetwork, v1alpha2.VMNetworkRouted, v1alpha2.VMNetworkNone)
			}
			o.Labels = map[string]string{}
			for _, kv := range strings.Split(labels, ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					o.Labels[k] = v
				}
			}
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return err
			}
			return agent.Run(ctrl.SetupSignalHandler(), cfg, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (empty: in-cluster)")
	f.StringVar(&role, "role", "all", "what the agent does for its node: all (no kubelet on the node, as under ferry up: it registers the Node, renews its Lease and runs the launcher pods too), handler (beside a real kubelet, which runs the launcher pods: fencing watchdog on a Lease of its own in "+v1alpha2.FencingLeaseNamespace+", VM handler, migration certificate, VM network) or kubelet (only the kubelet's part: a stand-in for a real kubelet, to test handler)")
	f.StringVar(&o.NodeName, "node-name", "", "this node's name")
	f.StringVar(&o.NodeIP, "node-ip", "", "this node's address")
	f.StringVar(&o.StateDir, "state-dir", "/var/lib/ferry/node", "where the node keeps its pods' run directories")
	f.IntVar(&o.PeerPort, "peer-port", agent.DefaultPeerPort, "port on --node-ip where agents ask each other whether the control plane is down for most of the cluster, over TLS with the nodes' migration certificates at both ends (kept in --state-dir/migration-tls whatever --migration-tls says; a node without one yet neither asks nor answers). 0: no peer checks: a control-plane outage longer than the watchdog timeout resets every node")
	f.Float64Var(&o.MaxUnreachable, "fencing-max-unreachable", v1alpha2.DefaultFencingMaxUnreachable, "the fencing controller's share of unreachable nodes beyond which it fences none; keep both equal")
	f.StringVar(&o.Watchdog, "watchdog", "none", "fencing watchdog: none, process:SOCKET (ferry up's per-node watchdog process), device:PATH (e.g. device:/dev/watchdog from the softdog module), or auto (auto:PATH): device:/dev/watchdog (PATH) if it is a character device, else none. Without a watchdog the node is never fenced, and its Node says so (condition "+v1alpha2.NodeConditionFencing+" False)")
	f.StringVar(&vmNetwork, "vm-network", v1alpha2.VMNetworkRouted, "routed: ready the node for VM NICs (forwarding, proxy ARP without delay, the VM range on-link on --vm-uplink); none: leave the node's network alone (VMs get no NIC)")
	f.StringVar(&o.VMRange, "ip-range", ipam.DefaultRanges, "comma-separated CIDRs that VM addresses come from (as the controller's): each is routed on the node's uplink")
	f.StringVar(&o.VMUplink, "vm-uplink", "", "the link VM addresses are announced on (default: the default route's)")
	f.StringVar(&o.CPU, "cpu", "4", "CPU the node offers")
	f.StringVar(&o.Memory, "memory", "8Gi", "memory the node offers")
	f.StringVar(&labels, "node-labels", "", "labels of the Node, key=value,...")
	f.BoolVar(&o.MigrationTLS, "migration-tls", true, "live migrations to and from this node over TLS, both ends' certificates checked: the agent keeps the node's certificate (made here, signed by the controller through a CertificateSigningRequest) in --state-dir/migration-tls, and the node refuses migrations while it has none; false: plain TCP (set it alike on every node; the agent still keeps the certificate for its peer checks, see --peer-port)")
	f.StringVar(&o.DevicePluginDir, "device-plugin-dir", "", "the kubelet's device-plugins directory (e.g. /var/lib/kubelet/device-plugins): with --role=handler, offer the node's /dev/net/tun and, where KVM runs guests, /dev/kvm to launcher pods as the extended resources "+v1alpha2.ResourceTun+" and "+v1alpha2.ResourceKVM+" (the controller's --launcher-devices=plugin); empty: off (Ferry's stand-in kubelet has no device plugins)")
	return cmd
}
