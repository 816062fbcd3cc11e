package agent

import (
	"context"
	"fmt"
	"github.com/ferryvm/ferry/internal/ipam"
	"github.com/ferryvm/ferry/internal/vmnet"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/launcher"
	"github.com/ferryvm/ferry/internal/watchdog"
)

// Options configure one node's agent.
type Options struct {
	NodeName string
	NodeIP   string
	Labels   map[string]string
	CPU      string
	Memory   string
	StateDir string
	// Watchdog is the fencing watchdog: "none", "process:SOCKET" (the per-node watchdog
	// process of `ferry up`) or "device:PATH" (the kernel's, e.g. /dev/watchdog).
	Watchdog string
	// PeerPort is where this agent answers the others about its contact with the control
	// plane (0: no peer checks); MaxUnreachable is the fencing controller's storm guard share.
	PeerPort       int
	MaxUnreachable float64
	// VMRange, when set, is the VM address range this node routes VMs of: the agent readies
	// the node's network for them (package vmnet) on VMUplink ("" the default route's link).
	VMRange  string
	VMUplink string
	// Runtime, when set, runs the node's launcher pods instead of processes (simulated
	// nodes: many agents in one process, VMs in memory).
	Runtime kubelet.Runtime
	Log     logr.Logger
}

// openWatchdog makes the watchdog an Options.Watchdog names; nil for "none".
func openWatchdog(spec string) (Watchdog, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch {
	case spec == "" || spec == "none":
		return nil, nil
	case kind == "process" && arg != "":
		return watchdog.DialProcess(arg), nil
	case kind == "device" && arg != "":
		return watchdog.NewDevice(arg), nil
	case spec == "fake":
		// Simulated nodes: armed and fed like a real one, but nothing resets the node; the
		// simulation stops a failed node's VMs itself.
		return &watchdog.Fake{}, nil
	}
	return nil, fmt.Errorf("--watchdog %q: want none, process:SOCKET, device:PATH or fake", spec)
}

// fencingPoll is how often the agent rereads its Node and NodeGroup for fencing settings.
const fencingPoll = 2 * time.Second

// Run runs the node until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cpu, err := resource.ParseQuantity(o.CPU)
	if err != nil {
		return fmt.Errorf("--cpu: %w", err)
	}
	mem, err := resource.ParseQuantity(o.Memory)
	if err != nil {
		return fmt.Errorf("--memory: %w", err)
	}
	wd, err := openWatchdog(o.Watchdog)
	if err != nil {
		return err
	}
	if o.VMRange != "" {
		r, err := ipam.ParseRange(o.VMRange)
		if err != nil {
			return err
		}
		uplink, err := vmnet.PrepareNode(r.Prefix(), o.VMUplink)
		if err != nil {
			return err
		}
		o.Log.Info("VM network ready", "range", r.String(), "uplink", uplink)
	}
	var f *fencer
	var onRenew func(time.Time, time.Duration)
	if wd != nil {
		scheme := runtime.NewScheme()
		_ = clientgoscheme.AddToScheme(scheme)
		_ = deckhousev1.AddToScheme(scheme)
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		if err != nil {
			return err
		}
		f = &fencer{c: c, node: o.NodeName, wd: wd, log: o.Log.WithName("fencing"), defaultInterval: kubelet.DefaultLeaseInterval}
		if o.PeerPort > 0 {
			f.peers = &peers{self: o.NodeName, port: o.PeerPort, maxUnreachable: o.MaxUnreachable, reachable: f.controlPlaneReachable}
		}
		onRenew = f.renewed
	}
	k := kubelet.New(cs, kubelet.Options{
		OnLeaseRenewed: onRenew,
		NodeName:       o.NodeName,
		NodeIP:         o.NodeIP,
		Labels:         o.Labels,
		CPU:            cpu,
		Memory:         mem,
		StateDir:       o.StateDir,
		Executable:     exe,
		Runtime:        o.Runtime,
		Probe:          probeLauncher,
		Migrate: func(ctx context.Context, runDir string, r v1alpha2.MigrationRequest) error {
			return launcher.StartMigration(ctx, runDir, launcher.MigrationRequest{
				URI: r.URI, MaxBandwidthBytes: r.MaxBandwidthBytes, DowntimeLimitMs: r.DowntimeLimitMs,
				AutoConverge: r.AutoConverge, CompletionTimeoutSeconds: r.CompletionTimeoutSeconds,
				ProgressTimeoutSeconds: r.ProgressTimeoutSeconds,
			})
		},
		CancelMigration: launcher.CancelMigration,
		FinalMigration: func(runDir string) (*v1alpha2.MigrationProgress, error) {
			m, err := launcher.FinalMigration(runDir)
			if err != nil {
				return nil, err
			}
			return progressOf(m), nil
		},
		Log: o.Log,
	})
	if err := awaitFencing(ctx, cs, o.NodeName, filepath.Join(o.StateDir, ResetMarker), o.Log); err != nil {
		return err
	}
	if f != nil {
		f.interval = k.SetLeaseInterval
		fctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { f.run(fctx, fencingPoll) })
		if f.peers != nil {
			wg.Go(func() {
				if err := f.peers.serve(fctx, net.JoinHostPort(o.NodeIP, strconv.Itoa(o.PeerPort))); err != nil {
					o.Log.Error(err, "Peers cannot ask this node about the control plane")
				}
			})
			wg.Go(func() { f.watchOutage(fctx) })
		}
		defer func() { cancel(); wg.Wait() }()
	}
	return k.Run(ctx)
}

// probeLauncher is the VM handler's question to a launcher: how is the guest?
func probeLauncher(ctx context.Context, runDir string) (kubelet.GuestState, error) {
	st, err := launcher.StatusOf(ctx, runDir)
	if err != nil {
		return kubelet.GuestState{}, err
	}
	g := kubelet.GuestState{Booted: st.Booted, Heartbeat: st.Heartbeat, HeartbeatAt: st.HeartbeatAt, IncomingURI: st.IncomingURI}
	if st.Migration != nil {
		g.Migration = progressOf(st.Migration)
	}
	return g, nil
}

func progressOf(m *launcher.MigrationStatus) *v1alpha2.MigrationProgress {
	return &v1alpha2.MigrationProgress{
		URI: m.URI, Status: m.Status, TotalTimeMs: m.TotalTimeMs, DowntimeMs: m.DowntimeMs,
		TransferredBytes: m.TransferredBytes, RemainingBytes: m.RemainingBytes, TotalBytes: m.TotalBytes,
		ThrottlePercent: m.ThrottlePercent, Error: m.Error,
	}
}
