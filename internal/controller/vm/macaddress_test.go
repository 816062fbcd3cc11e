package vm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
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
