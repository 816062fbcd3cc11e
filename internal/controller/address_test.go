package controller_test

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestAddressesAreNeverShared: VMs created at once get distinct addresses; a VM asking for
// a taken or foreign address is told so and gets none.
func TestAddressesAreNeverShared(t *testing.T) {
	ns := newNamespace(t)
	const n = 8
	for i := range n {
		disk := fmt.Sprintf("d%d", i)
		makeImageDisk(t, ns, disk)
		if err := k8s.Create(ctx, newVM(ns, fmt.Sprintf("vm%d", i), disk, v1alpha2.AlwaysOff)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("vm%d", i)
		var addr string
		eventually(t, timeout, name+" has an address", func() (bool, string) {
			addr = getVM(t, ns, name).Status.IPAddress
			return addr != "", ""
		})
		if other, dup := seen[addr]; dup {
			t.Fatalf("%s and %s share %s", name, other, addr)
		}
		seen[addr] = name
	}

	taken := getVM(t, ns, "vm0").Status.IPAddress
	makeImageDisk(t, ns, "dx")
	makeImageDisk(t, ns, "dy")
	dup := newVM(ns, "dup", "dx", v1alpha2.AlwaysOff)
	dup.Spec.VirtualMachineIPAddress = taken
	foreign := newVM(ns, "foreign", "dy", v1alpha2.AlwaysOff)
	foreign.Spec.VirtualMachineIPAddress = "192.168.7.7"
	for _, vm := range []*v1alpha2.VirtualMachine{dup, foreign} {
		if err := k8s.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"dup": "already held by VM " + ns + "/vm0", "foreign": "outside the VM address range"} {
		eventually(t, timeout, name+" refused its address", func() (bool, string) {
			vm := getVM(t, ns, name)
			c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionIPAddressReady)
			if c == nil {
				return false, "no condition"
			}
			return c.Status == "False" && strings.Contains(c.Message, want) && vm.Status.IPAddress == "", c.Message
		})
	}
}
