// Command ferry-launcher is the process of a launcher pod: it runs one VM's QEMU. It is
// `ferry launcher` in a binary of its own, which links no Kubernetes client or control
// plane, so that each VM's launcher starts small.
package main

import (
	"os"

	"github.com/ferryvm/ferry/internal/launcher/launchercmd"
)

func main() {
	cmd := launchercmd.New("ferry-launcher")
	cmd.SilenceUsage = true // as ferry's own commands
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
