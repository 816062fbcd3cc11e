package agent

import (
	"context"
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/launcher"
)

// Options configure one node's agent.
type Options struct {
	NodeName string
	NodeIP   string
	Labels   map[string]string
	CPU      string
	Memory   string
	StateDir string
	Log      logr.Logger
}

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
	k := kubelet.New(cs, kubelet.Options{
		NodeName:   o.NodeName,
		NodeIP:     o.NodeIP,
		Labels:     o.Labels,
		CPU:        cpu,
		Memory:     mem,
		StateDir:   o.StateDir,
		Executable: exe,
		Probe:      probeLauncher,
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
