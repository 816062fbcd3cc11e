package main

import (
	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/internal/watchdog/watchdogcmd"
)

// watchdogCommand is `ferry watchdog`, which ferry up of earlier releases runs (it now runs
// ferry-watchdog).
func watchdogCommand() *cobra.Command {
	cmd := watchdogcmd.New("watchdog")
	cmd.Hidden = true
	return cmd
}
