package main

import (
	"context"
	"errors"
	"fmt"
	"k8s.io/client-go/rest"
	"net/http"
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
	"github.com/ferryvm/ferry/internal/launcher"
)

// simNodesCommand runs many simulated nodes in one process: each is a real agent (Node,
// Lease, pod handling, fencing watchdog) whose launcher pods run in memory
// (launcher.RunSimulated) instead of as QEMU processes. For scale tests of the control plane.
func simNodesCommand() *cobra.Command {
	var (
		kubeconfig, prefix, stateDir, cpu, memory, group, watchdogKind string
		count                                                          int
		so                                                             launcher.SimOptions
	)
	cmd := &cobra.Command{
		Use:    "sim-nodes",
		Short:  "Run simulated nodes (agents with in-memory VMs) for scale tests",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := zap.New(zap.UseDevMode(false))
			ctrl.SetLogger(log)
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return err
			}
			cfg.QPS, cfg.Burst = 20, 40
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			so.Net = launcher.NewSimNet()
			failedDir := filepath.Join(stateDir, "failed")
			if err := os.MkdirAll(failedDir, 0o755); err != nil {
				return err
			}
			var wg sync.WaitGroup
			for i := 1; i <= count; i++ {
				name := fmt.Sprintf("%s-%03d", prefix, i)
				// A node fails like a powered-off one: no graceful stop (which would disarm its
				// watchdog and so forbid fencing), only silence: every request of its agent
				// fails from then on, and its VMs die.
				vmCtx, killVMs := context.WithCancel(ctx)
				var cut atomic.Bool
				ncfg := rest.CopyConfig(cfg)
				ncfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &cutTransport{rt: rt, cut: &cut} })
				rt := &simRuntime{so: so, nodeIP: "127.0.0.1", ctx: vmCtx}
				o := agent.Options{
					NodeName: name, NodeIP: "127.0.0.1", CPU: cpu, Memory: memory,
					StateDir: filepath.Join(stateDir, name), Watchdog: watchdogKind,
					Labels:  map[string]string{"node.deckhouse.io/group": group},
					Runtime: rt.start, Log: log.WithValues("node", name),
				}
				wg.Go(func() {
					defer killVMs()
					// A node fails when the bench drops a file named after it in failed/.
					go func() {
						for vmCtx.Err() == nil {
							if _, err := os.Stat(filepath.Join(failedDir, name)); err == nil {
								log.Info("Simulated node fails", "node", name)
								cut.Store(true)
								killVMs()
								return
							}
							select {
							case <-vmCtx.Done():
							case <-time.After(500 * time.Millisecond):
							}
						}
					}()
					if err := agent.Run(ctx, ncfg, o); err != nil && ctx.Err() == nil && !cut.Load() {
						log.Error(err, "Simulated node stopped", "node", name)
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
	f.IntVar(&count, "count", 10, "number of simulated nodes")
	f.StringVar(&prefix, "prefix", "sim", "node names: <prefix>-001 …")
	f.StringVar(&stateDir, "state-dir", "/tmp/ferry-sim", "run directories of the simulated VMs; a file failed/<node> fails that node")
	f.StringVar(&cpu, "cpu", "64", "CPU each node offers")
	f.StringVar(&memory, "memory", "64Gi", "memory each node offers")
	f.StringVar(&group, "node-group", "worker", "NodeGroup of the nodes")
	f.StringVar(&watchdogKind, "watchdog", "fake", "fencing watchdog: fake (armed and fed, never resets) or none")
	f.DurationVar(&so.MigrationTime, "migration-time", 200*time.Millisecond, "how long a simulated migration takes")
	f.DurationVar(&so.Downtime, "downtime", 20*time.Millisecond, "simulated switchover pause")
	return cmd
}

// simRuntime runs a node's launcher pods in memory.
type simRuntime struct {
	so     launcher.SimOptions
	nodeIP string
	ctx    context.Context // the node's: its VMs end with it
}

func (r *simRuntime) start(argv, env []string, dir string, logf *os.File) (kubelet.Container, error) {
	if len(argv) < 2 || argv[1] != "launcher" {
		return nil, fmt.Errorf("simulated nodes run only launchers, not %q", strings.Join(argv, " "))
	}
	var o launcher.Options
	fs := pflag.NewFlagSet("launcher", pflag.ContinueOnError)
	launcherFlags(fs, &o)
	if err := fs.Parse(argv[2:]); err != nil {
		return nil, err
	}
	o.RunDir, o.MigrationAddress = dir, r.nodeIP
	// The file is closed by the kubelet once started; the simulated launcher writes its own.
	lf, err := os.OpenFile(logf.Name(), os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(r.ctx)
	c := &simContainer{cancel: cancel, done: make(chan struct{}), id: filepath.Base(dir)}
	go func() {
		defer lf.Close()
		c.code = launcher.RunSimulated(ctx, o, lf, r.so)
		close(c.done)
	}()
	return c, nil
}

type simContainer struct {
	id     string
	cancel context.CancelFunc
	done   chan struct{}
	code   int
}

func (c *simContainer) ID() string { return "sim-" + c.id }
func (c *simContainer) Wait() int  { <-c.done; return c.code }
func (c *simContainer) Terminate() { c.cancel() }
func (c *simContainer) Kill()      { c.cancel() }

// cutTransport fails every request once cut: a node whose network is gone.
type cutTransport struct {
	rt  http.RoundTripper
	cut *atomic.Bool
}

func (t *cutTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.cut.Load() {
		return nil, errors.New("simulated node failure: no network")
	}
	return t.rt.RoundTrip(r)
}
