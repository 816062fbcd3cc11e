// Command ferry-agent is each node's agent: its Node and Lease, the launcher pods (as a
// stand-in kubelet, or beside a real one), the fencing watchdog, the VM network. It is
// `ferry agent` in a binary of its own, which links Kubernetes' client but not its control
// plane nor Ferry's controllers, so that the process of every node stays small.
package main

import (
	"os"

	"github.com/ferryvm/ferry/internal/agent/agentcmd"
)

func main() {
	cmd := agentcmd.New("ferry-agent")
	cmd.SilenceUsage = true // as ferry's own commands
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
