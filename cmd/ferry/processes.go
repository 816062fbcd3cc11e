package main

import (
	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/internal/agent/agentcmd"
	"github.com/ferryvm/ferry/internal/controller/controllercmd"
	"github.com/ferryvm/ferry/internal/launcher/launchercmd"
)

// controllerCommand is `ferry controller`, as the Deployment runs it (ferry up runs
// ferry-controller, the same command in a binary of its own).
func controllerCommand() *cobra.Command {
	return controllercmd.New("controller")
}

// agentCommand is `ferry agent`, which agent DaemonSets of earlier releases run (newer ones,
// and ferry up's nodes, run ferry-agent).
func agentCommand() *cobra.Command {
	cmd := agentcmd.New("agent")
	cmd.Hidden = true
	return cmd
}

// launcherCommand is `ferry launcher`, which launcher pods of earlier releases run (newer
// ones run ferry-launcher).
func launcherCommand() *cobra.Command {
	cmd := launchercmd.New("launcher")
	cmd.Hidden = true
	return cmd
}
