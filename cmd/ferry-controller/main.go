// Command ferry-controller is Ferry's controllers, the process ferry up runs: `ferry
// controller` in a binary of its own, which links Kubernetes' client but not its control
// plane nor kubectl, so that it starts small.
package main

import (
	"os"

	"github.com/ferryvm/ferry/internal/controller/controllercmd"
)

func main() {
	cmd := controllercmd.New("ferry-controller")
	cmd.SilenceUsage = true // as ferry's own commands
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
