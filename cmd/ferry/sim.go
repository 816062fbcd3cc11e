package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ferryvm/ferry/internal/agent"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/controller/fencing"
	"github.com/ferryvm/ferry/internal/launcher"
	"github.com/ferryvm/ferry/internal/logtime"
	"github.com/ferryvm/ferry/internal/simnode"
)

// simNodesCommand runs many simulated nodes in one process: each is a real agent (Node,
// Lease, pod handling, fencing watchdog) whose launcher pods run in memory
// (launcher.RunSimulated) instead of as QEMU processes. For scale tests of the control
// plane, and for chaos runs: --control serves faults (power, network, agent) and reports
// the simulated guests (see internal/simnode).
func simNodesCommand() *cobra.Command {
	var (
		kubeconfig, kubeconfigDir, prefix, stateDir, cpu, memory, group, control string
		count, peerPort                                                          int
		watchdogResets, split                                                    bool
		so                                                                       launcher.SimOptions
	)
	cmd := &cobra.Command{
		Use:    "sim-nodes",
		Short:  "Run simulated nodes (agents with in-memory VMs) for scale and chaos tests",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := zap.New(zap.UseDevMode(false), func(o *zap.Options) { o.TimeEncoder = logtime.Encoder })
			ctrl.SetLogger(log)
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return err
			}
			cfg.QPS, cfg.Burst = 20, 40
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cl := simnode.NewCluster(log)
			so.Net = launcher.NewSimNet()
			so.OnGuest = cl.Guests.Observe
			failedDir := filepath.Join(stateDir, "failed")
			if err := os.MkdirAll(failedDir, 0o755); err != nil {
				return err
			}
			for i := 1; i <= count; i++ {
				name := fmt.Sprintf("%s-%03d", prefix, i)
				ip := "127.0.0.1"
				if peerPort > 0 {
					// Each node answers its peers on an address of its own.
					ip = fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)
				}
				nodeCfg := cfg
				if kubeconfigDir != "" {
					// Each agent on credentials of its own (a token bound to its node).
					if nodeCfg, err = clientcmd.BuildConfigFromFlags("", filepath.Join(kubeconfigDir, name+".kubeconfig")); err != nil {
						return err
					}
					nodeCfg.QPS, nodeCfg.Burst = cfg.QPS, cfg.Burst
				}
				n := cl.Add(name, nodeCfg, agent.Options{
					NodeName: name, NodeIP: ip, CPU: cpu, Memory: memory,
					StateDir: filepath.Join(stateDir, name),
					Labels:   map[string]string{"node.deckhouse.io/group": group},
					PeerPort: peerPort, MaxUnreachable: fencing.DefaultMaxUnreachable,
				})
				rt := &simRuntime{so: so, node: n}
				n.Runtime, n.BrokenWatchdog = rt.start, !watchdogResets
				if split {
					n.KubeletConfig = cfg
				}
			}
			var wg sync.WaitGroup
			for _, n := range cl.Nodes() {
				wg.Go(func() { n.Live(ctx) })
				// A node also fails when a file named after it appears in failed/ (the scale
				// bench's way).
				wg.Go(func() {
					for ctx.Err() == nil {
						if _, err := os.Stat(filepath.Join(failedDir, n.Name)); err == nil {
							n.PowerOff("failed/" + n.Name + " appeared")
							return
						}
						select {
						case <-ctx.Done():
						case <-time.After(500 * time.Millisecond):
						}
					}
				})
			}
			if control != "" {
				ln, err := net.Listen("tcp", control)
				if err != nil {
					return fmt.Errorf("--control: %w", err)
				}
				// The bench reads where to reach us.
				if err := os.WriteFile(filepath.Join(stateDir, "control-addr"), []byte(ln.Addr().String()), 0o644); err != nil {
					return err
				}
				wg.Go(func() {
					if err := cl.Serve(ctx, ln); err != nil {
						log.Error(err, "Control endpoint stopped")
					}
				})
			}
			fmt.Printf("%d simulated nodes running (%s-001 …)\n", count, prefix)
			wg.Wait()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster")
	f.StringVar(&kubeconfigDir, "kubeconfig-dir", "", "a kubeconfig per node, <dir>/<node>.kubeconfig, instead of --kubeconfig")
	f.IntVar(&count, "count", 10, "number of simulated nodes")
	f.StringVar(&prefix, "prefix", "sim", "node names: <prefix>-001 …")
	f.StringVar(&stateDir, "state-dir", "/tmp/ferry-sim", "run directories of the simulated VMs; a file failed/<node> powers that node off")
	f.StringVar(&cpu, "cpu", "64", "CPU each node offers")
	f.StringVar(&memory, "memory", "64Gi", "memory each node offers")
	f.StringVar(&group, "node-group", "worker", "NodeGroup of the nodes")
	f.StringVar(&control, "control", "", "address (e.g. 127.0.0.1:0) of the fault and guest endpoint; the address taken is written to <state-dir>/control-addr")
	f.IntVar(&peerPort, "peer-port", 0, "port the agents ask each other about the control plane on (0: no peer checks); each node then gets an address 127.1.x.y of its own")
	f.BoolVar(&watchdogResets, "watchdog-resets", true, "a node whose watchdog is not fed in time resets (false: the watchdogs are armed and fed but never fire; for scale runs, where many simulated nodes share a few cores and renew late, and to prove that chaos runs catch a VM running twice)")
	f.BoolVar(&split, "split-agent", false, "each node as on a real cluster: a stand-in kubelet (agent --role kubelet, on --kubeconfig) runs its launcher pods and the agent proper (--role handler, on the node's own credentials from --kubeconfig-dir when given) handles fencing and the VMs")
	f.DurationVar(&so.MigrationTime, "migration-time", 200*time.Millisecond, "how long a simulated migration takes")
	f.DurationVar(&so.Downtime, "downtime", 20*time.Millisecond, "simulated switchover pause")
	return cmd
}

// simRuntime runs a node's launcher pods in memory.
type simRuntime struct {
	so   launcher.SimOptions
	node *simnode.Node
}

func (r *simRuntime) start(argv, env []string, dir string, logf *os.File) (kubelet.Container, error) {
	args, ok := launcherArgs(argv)
	if !ok {
		return nil, fmt.Errorf("simulated nodes run only launchers, not %q", strings.Join(argv, " "))
	}
	var o launcher.Options
	fs := pflag.NewFlagSet("launcher", pflag.ContinueOnError)
	launcher.Flags(fs, &o)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.RunDir, o.MigrationAddress = dir, r.node.IP
	// The file is closed by the kubelet once started; the simulated launcher writes its own.
	lf, err := os.OpenFile(logf.Name(), os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	// The launcher dies with the node's power (and with its agent: Pdeathsig).
	ctx, cancel := context.WithCancel(r.node.VMContext())
	c := &simContainer{cancel: cancel, done: make(chan struct{}), id: filepath.Base(dir)}
	r.node.AddLauncher(c.id, c.Kill)
	go func() {
		defer lf.Close()
		code := launcher.RunSimulated(ctx, o, lf, r.so)
		r.node.RemoveLauncher(c.id)
		if c.killed.Load() {
			code = 137 // SIGKILL
		}
		c.code = code
		close(c.done)
	}()
	return c, nil
}

// launcherArgs are the flags of a launcher's command line: ferry-launcher's, or `ferry
// launcher`'s (pods of releases before ferry-launcher).
func launcherArgs(argv []string) ([]string, bool) {
	switch {
	case len(argv) > 0 && argv[0] == kubelet.LauncherCommand:
		return argv[1:], true
	case len(argv) > 1 && argv[0] == "ferry" && argv[1] == "launcher":
		return argv[2:], true
	}
	return nil, false
}

type simContainer struct {
	id     string
	cancel context.CancelFunc
	killed atomic.Bool
	done   chan struct{}
	code   int
}

func (c *simContainer) ID() string { return "sim-" + c.id }
func (c *simContainer) Wait() int  { <-c.done; return c.code }
func (c *simContainer) Terminate() { c.cancel() }

// Kill ends the launcher as SIGKILL would: its guest stops at once and it exits with 137.
func (c *simContainer) Kill() { c.killed.Store(true); c.cancel() }
