// Command ferry is the whole of Ferry in one binary: `ferry up` runs an all-in-one
// cluster, `ferry k` is kubectl, `ferry v` the VM verbs, and `controller`, `agent` and
// `launcher` are the processes of a Ferry installation.
package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/internal/cli"
	"github.com/ferryvm/ferry/internal/ipam"
	"github.com/ferryvm/ferry/internal/kubectl"
	"github.com/ferryvm/ferry/internal/personality"
	"github.com/ferryvm/ferry/internal/realnode"
	"github.com/ferryvm/ferry/internal/up"
	"github.com/ferryvm/ferry/internal/version"
)

func main() {
	// Run as kube-apiserver or etcd when called by those names (envtest execs them).
	if run := personality.Lookup(filepath.Base(os.Args[0])); run != nil {
		os.Exit(run(os.Args[1:]))
	}
	// `ferry --state-dir X k ...`: kubectl gets every argument after `k` untouched, so
	// the global flag is taken off the front here.
	if len(os.Args) > 2 && os.Args[1] == "--state-dir" {
		os.Setenv("FERRY_STATE_DIR", os.Args[2])
		os.Args = append(os.Args[:1], os.Args[3:]...)
	} else if len(os.Args) > 1 && strings.HasPrefix(os.Args[1], "--state-dir=") {
		os.Setenv("FERRY_STATE_DIR", strings.TrimPrefix(os.Args[1], "--state-dir="))
		os.Args = append(os.Args[:1], os.Args[2:]...)
	}
	if err := newRoot().Execute(); err != nil {
		// `ferry v ssh` exits with ssh's code, as scripts around ssh expect.
		os.Exit(cli.ExitCode(err))
	}
}

func newRoot() *cobra.Command {
	stateDir := up.DefaultStateDir()
	root := &cobra.Command{
		Use:           "ferry",
		Short:         "Ferry: virtual machines on Kubernetes that survive node maintenance and failure",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.PersistentFlags().StringVar(&stateDir, "state-dir", stateDir, "state directory of `ferry up` (env FERRY_STATE_DIR)")
	kubeconfig := func() string {
		if k := os.Getenv("KUBECONFIG"); k != "" {
			return k
		}
		return up.KubeconfigPath(stateDir)
	}
	root.AddCommand(
		upCommand(&stateDir),
		kubectl.NewCommandWithResolver(func() string { return up.KubeconfigPath(stateDir) }),
		cli.NewCommand(kubeconfig),
		controllerCommand(),
		agentCommand(),
		launcherCommand(),
		watchdogCommand(),
		simNodesCommand(),
		nodeCommand(&stateDir),
		registryCommand(&stateDir),
		nodeBootCommand(),
		uninstallCommand(kubeconfig),
		&cobra.Command{
			Use:   "version",
			Short: "Print Ferry's version",
			Run: func(cmd *cobra.Command, _ []string) {
				fmt.Fprintf(cmd.OutOrStdout(), "ferry %s (Kubernetes v1.37.2 control plane)\n", version.Version)
			},
		},
	)
	return root
}

func upCommand(stateDir *string) *cobra.Command {
	o := up.Options{Out: os.Stdout}
	var gcPercent int
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run an all-in-one Ferry cluster: control plane, controller, nodes and a sample VM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.StateDir = *stateDir
			if _, env := os.LookupEnv("GOGC"); cmd.Flags().Changed("gc-percent") || !env {
				debug.SetGCPercent(gcPercent)
			}
			if addr := os.Getenv("FERRY_UP_PPROF"); addr != "" {
				go servePprof(addr)
			}
			if !cmd.Flags().Changed("image-source-dirs") {
				o.ImageSourceDirs = nil
			} else if o.ImageSourceDirs == nil {
				o.ImageSourceDirs = []string{}
			}
			return up.Run(o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Nodes, "nodes", 3, "number of nodes")
	f.BoolVar(&o.NetNS, "netns", os.Geteuid() == 0, "give each node its own network namespace (root only)")
	f.IntVar(&o.Port, "port", 6443, "apiserver port")
	f.StringVar(&o.IPRange, "ip-range", ipam.DefaultRanges, "comma-separated IPv4 CIDRs that VM addresses come from, first range first (they must not overlap; each /29 or larger)")
	f.BoolVar(&o.SampleVM, "sample-vm", true, "create the sample VM linux-vm on first start")
	f.StringVar(&o.NodeCPU, "node-cpu", "4", "CPU each node offers to VMs")
	f.StringVar(&o.NodeMemory, "node-memory", "8Gi", "memory each node offers to VMs")
	f.StringVar(&o.FencingProfile, "fencing-profile", up.DefaultFencingProfile, "watchdog profile of the nodes' NodeGroup: Critical (2s), Fast (5s), Balanced (10s), Tolerant (20s), or off")
	f.BoolVar(&o.MigrationTLS, "migration-tls", os.Getenv("FERRY_MIGRATION_TLS") != "false", "live migrations over TLS with per-node certificates from the controller's signer (the nodes' agents' --migration-tls; default true unless $FERRY_MIGRATION_TLS is false)")
	f.BoolVar(&o.NoController, "no-controller", false, "run no controller (another runs it, e.g. on its ServiceAccount token)")
	_ = f.MarkHidden("no-controller")
	f.BoolVar(&o.NoCRDs, "no-crds", false, "install none of Ferry's CRDs (a cluster that gets them from deploy/; needs --no-controller, --nodes 0, --sample-vm=false)")
	_ = f.MarkHidden("no-crds")
	f.BoolVar(&o.SplitAgent, "split-agent", true, "run each node as a real cluster's: a stand-in kubelet (agent --role=kubelet) runs the launcher pods, and the agent as the DaemonSet runs it (--role=handler) does fencing and the VM handler beside it; false: one agent process plays both (--role=all)")
	_ = f.MarkHidden("split-agent")
	f.StringSliceVar(&o.ImageSourceDirs, "image-source-dirs", nil, "directories the controller reads file:// images from (its --image-source-dirs; empty: none). Default: the state directory's guest, $FERRY_GUEST_CACHE or /var/cache/ferry/guests (make debian-guest), and ~/.cache/ferry/guest (the benchmarks')")
	// The control plane's heap (the apiserver's OpenAPI specs and caches, etcd, the
	// scheduler and controller-manager) is most of ferry up's memory, and Go lets a heap
	// grow to twice what is live before it collects. With 50 (measured on a 2-core machine):
	// 3 idle nodes with the sample VM take 65-90 MiB less, for 0.7-1.3% of a core more;
	// under load the collector costs more (250 VMs starting on 25 simulated nodes took
	// 38 s instead of 32 s), so a cluster for scale tests may want 100.
	f.IntVar(&gcPercent, "gc-percent", 50, "Go's GC target (GOGC) for ferry up's own process, which runs the control plane: how far its heap grows past what is live before a collection (Go's default is 100: more memory, a little less CPU; $GOGC applies when this flag is not given)")
	f.StringVar(&o.Kubelet, "kubelet", up.KubeletStandIn, "what runs each node's pods: stand-in (Ferry's own, as processes: fast) or real (a kubelet with containerd and kube-proxy in the node's namespaces, Ferry installed from deploy/base; root, make node-bins)")
	return cmd
}

// nodeBootCommand is the first process of a real-kubelet node of `ferry up --kubelet=real`
// (realnode.Command starts it); not for users.
func nodeBootCommand() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:    "node-boot",
		Short:  "Run a real-kubelet node of ferry up (started by ferry up)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return realnode.Boot(config, os.Stdout)
		},
	}
	cmd.Flags().StringVar(&config, "config", "", "the node's boot.json")
	return cmd
}

// servePprof serves Go's profiles of `ferry up`'s own process (the control plane's, mostly)
// at addr/debug/pprof, as the controller's --pprof-bind-address does for it.
func servePprof(addr string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintf(os.Stderr, "ferry up: profiles on $FERRY_UP_PPROF %s: %v\n", addr, err)
	}
}
