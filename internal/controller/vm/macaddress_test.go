package vm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestRunningMAC: the MAC a VM runs with is its launcher's --mac, or, for a launcher of a
// release before VirtualMachineMACAddress, the one it derived from --ip (02:66 and the
// address), which the VM's own vmmac then asks for so that a restart keeps it.
func TestRunningMAC(t *testing.T) {
	pod := func(args ...string) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Args: append([]string{"launcher", "--vm", "x"}, args...)}}}}
	}
	for _, c := range []struct {
		name string
		s    scope
		want string
	}{
		{"none", scope{}, ""},
		{"no NIC", scope{active: pod("--cpus", "1")}, ""},
		{"--mac", scope{active: pod("--ip", "10.66.10.5/24", "--gateway", "10.66.10.1", "--mac", "5e:e6:19:22:0f:d8")}, "5e:e6:19:22:0f:d8"},
		{"legacy", scope{active: pod("--ip", "10.66.10.5/24", "--gateway", "10.66.10.1")}, "02:66:0a:42:0a:05"},
		{"migration target", scope{targets: []*corev1.Pod{pod("--ip", "10.66.10.5/24", "--mac", "5e:e6:19:22:0f:d9", "--incoming")}}, "5e:e6:19:22:0f:d9"},
		{"terminating", scope{terminating: []*corev1.Pod{pod("--ip=10.66.10.6/24")}}, "02:66:0a:42:0a:06"},
	} {
		if got := c.s.runningMAC(); got != c.want {
			t.Errorf("%s: runningMAC = %q, want %q", c.name, got, c.want)
		}
	}
}

// TestMACChangeAwaitsRestart: a VM whose spec names another vmmac than the one it runs
// with lists the change as awaiting a restart.
func TestMACChangeAwaitsRestart(t *testing.T) {
	vm := &v1alpha2.VirtualMachine{}
	vm.Status.Networks = []v1alpha2.NetworksStatus{{Type: "Main", MACAddress: "5e:e6:19:22:0f:d8", VirtualMachineMACAddressName: "vm-abcde"}}
	if got := addressChanges(vm); len(got) != 0 {
		t.Errorf("no spec name: %+v", got)
	}
	vm.Spec.Networks = []v1alpha2.NetworksSpec{{Type: v1alpha2.NetworkTypeMain, VirtualMachineMACAddressName: "vm-abcde"}}
	if got := addressChanges(vm); len(got) != 0 {
		t.Errorf("the same name: %+v", got)
	}
	vm.Spec.Networks[0].VirtualMachineMACAddressName = "fixed"
	if got := addressChanges(vm); len(got) != 1 || got[0].Path != "networks" || got[0].CurrentValue != "vm-abcde" || got[0].DesiredValue != "fixed" {
		t.Errorf("another name: %+v", got)
	}
}
