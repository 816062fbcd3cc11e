// Command ferry-watchdog is a node's watchdog process under ferry up: it resets the node
// when the node's agent stops feeding it. It is `ferry watchdog` in a small binary of its
// own.
package main

import (
	"os"

	"github.com/ferryvm/ferry/internal/watchdog/watchdogcmd"
)

func main() {
	cmd := watchdogcmd.New("ferry-watchdog")
	cmd.SilenceUsage = true // as ferry's own commands
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
