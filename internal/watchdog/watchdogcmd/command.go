// Package watchdogcmd is the command line of a node's watchdog process under ferry up,
// shared by ferry-watchdog and `ferry watchdog`.
package watchdogcmd

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ferryvm/ferry/internal/logtime"
	"github.com/ferryvm/ferry/internal/watchdog"
)

// New is the watchdog command named use.
func New(use string) *cobra.Command {
	var node, socket, nodeDir string
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run a node's watchdog under ferry up: reset the node when its agent stops feeding it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if node == "" || socket == "" || nodeDir == "" {
				return fmt.Errorf("--node, --socket and --node-dir are required")
			}
			log := newLogger().WithValues("node", node)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fire := func(reason string) {
				// The node's agent reads this when it comes back: it rejoins once fenced.
				marker := filepath.Join(nodeDir, watchdog.ResetMarker)
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

// newLogger logs as controller-runtime's zap.New() does by default (JSON lines on stderr,
// RFC 3339 times to the millisecond, info and up), without linking controller-runtime.
func newLogger() logr.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = logtime.Encoder
	sink := zapcore.Lock(os.Stderr)
	core := zapcore.NewCore(zapcore.NewJSONEncoder(ec), sink, zap.InfoLevel)
	return zapr.NewLogger(zap.New(core, zap.ErrorOutput(sink), zap.AddStacktrace(zap.ErrorLevel)))
}
