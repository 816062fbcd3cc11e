package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ferryvm/ferry/internal/agent"
	"github.com/ferryvm/ferry/internal/watchdog"
)

func watchdogCommand() *cobra.Command {
	var node, socket, nodeDir string
	cmd := &cobra.Command{
		Use:    "watchdog",
		Short:  "Run a node's watchdog under ferry up: reset the node when its agent stops feeding it",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" || socket == "" || nodeDir == "" {
				return fmt.Errorf("--node, --socket and --node-dir are required")
			}
			log := zap.New().WithValues("node", node)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fire := func(reason string) {
				// The node's agent reads this when it comes back: it rejoins once fenced.
				marker := filepath.Join(nodeDir, agent.ResetMarker)
				if err := os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339Nano)+" "+reason+"\n"), 0o644); err != nil {
					log.Error(err, "Could not record the reset", "file", marker)
				}
				killed, err := watchdog.KillNode(nodeDir, os.Getpid())
				log.Info(fmt.Sprintf("Watchdog of node %s expired (%s): reset the node, killed %d processes: %v", node, reason, len(killed), killed),
					"reason", reason, "killed", killed)
				if err != nil {
					log.Error(err, "Reset of the node left processes running", "nodeDir", nodeDir)
				}
			}
			return watchdog.Serve(ctx, socket, fire, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "name of the node this watchdog fences")
	f.StringVar(&socket, "socket", "", "unix socket the node's agent arms, feeds and disarms the watchdog on")
	f.StringVar(&nodeDir, "node-dir", "", "the node's state directory, as in its agent's --state-dir: every process naming it is killed on expiry")
	return cmd
}
