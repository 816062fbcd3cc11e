// Package launchercmd is the launcher's command line, shared by ferry-launcher (the
// launcher pods' process) and `ferry launcher` (which pods of earlier releases name).
package launchercmd

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/internal/launcher"
)

// New is the launcher command named use, with its relays' sub-commands.
func New(use string) *cobra.Command {
	o := launcher.Options{RunDir: os.Getenv("FERRY_RUN_DIR")}
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run one VM's QEMU (the process of a launcher pod)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			os.Exit(launcher.Run(ctx, o, os.Stderr))
			return nil
		},
	}
	launcher.Flags(cmd.Flags(), &o)
	cmd.AddCommand(relayCommand(launcher.RelayConsole, "Join stdin/stdout to the VM's serial console (the far end of `ferry v console`); --log prints what the guest wrote"),
		relayCommand(launcher.RelayVNC, "Join stdin/stdout to the VM's VNC server (the far end of `ferry v vnc`)"))
	return cmd
}

// relayCommand is `ferry-launcher console|vnc`, which `ferry v` runs in a launcher pod
// through pods/exec: it joins stdin/stdout to a socket of the pod's QEMU.
func relayCommand(kind, short string) *cobra.Command {
	runDir := os.Getenv("FERRY_RUN_DIR")
	var logOnly bool
	cmd := &cobra.Command{
		Use:   kind,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			what := kind
			if logOnly {
				what = launcher.RelayConsoleLog
			}
			return launcher.Relay(cmd.Context(), what, runDir, os.Stdin, os.Stdout)
		},
	}
	cmd.Flags().StringVar(&runDir, "run-dir", runDir, "the launcher's run directory (env FERRY_RUN_DIR)")
	if kind == launcher.RelayConsole {
		cmd.Flags().BoolVar(&logOnly, "log", false, "print the guest's serial output so far and exit")
	}
	return cmd
}
