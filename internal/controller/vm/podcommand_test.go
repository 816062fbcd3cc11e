package vm

import (
	"slices"
	"testing"

	"github.com/spf13/pflag"

	"github.com/ferryvm/ferry/internal/launcher"
)

// TestLauncherPodRunsFerryLauncher: the container runs ferry-launcher, whose flags (as
// ferry-launcher parses them) are all of its arguments.
func TestLauncherPodRunsFerryLauncher(t *testing.T) {
	vm := sizedVM(2, "", "1Gi")
	disks := []attachedDisk{{Path: "/s/root.qcow2", Format: "qcow2", BootIndex: 1}, {Path: "/s/seed.iso", Format: "raw", CDROM: true}}
	pod := launcherPod(vm, disks, "ferryvm/ferry:0.2.0", 7, testNIC, NodeSide{StorageDir: "/s"}, podDevices{})
	c := pod.Spec.Containers[0]
	if !slices.Equal(c.Command, []string{"ferry-launcher"}) {
		t.Errorf("command %q, want [ferry-launcher]", c.Command)
	}
	var o launcher.Options
	fs := pflag.NewFlagSet("ferry-launcher", pflag.ContinueOnError)
	launcher.Flags(fs, &o)
	if err := fs.Parse(c.Args); err != nil || fs.NArg() != 0 {
		t.Fatalf("ferry-launcher %q: %v, arguments left %q", c.Args, err, fs.Args())
	}
	if o.VMName != vm.Name || o.Namespace != vm.Namespace || o.CPUs != 2 || o.FencingToken != 7 || len(o.Disks) != 2 || o.IP != testNIC.Address {
		t.Errorf("ferry-launcher %q parses as %+v", c.Args, o)
	}
}
