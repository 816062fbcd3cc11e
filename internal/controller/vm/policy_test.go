package vm

import (
	"testing"
	"time"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	corev1 "k8s.io/api/core/v1"
)

func TestShouldRun(t *testing.T) {
	tests := []struct {
		policy v1alpha2.RunPolicy
		power  string
		want   bool
	}{
		{v1alpha2.AlwaysOn, "", true},
		{v1alpha2.AlwaysOn, PowerOff, true},
		{v1alpha2.AlwaysOff, "", false},
		{v1alpha2.AlwaysOff, PowerOn, false},
		{v1alpha2.Manual, "", false},
		{v1alpha2.Manual, PowerOn, true},
		{v1alpha2.Manual, PowerOff, false},
		{v1alpha2.AlwaysOnUnlessStoppedManually, "", true},
		{v1alpha2.AlwaysOnUnlessStoppedManually, PowerOn, true},
		{v1alpha2.AlwaysOnUnlessStoppedManually, PowerOff, false},
		{"", "", true},
	}
	for _, tc := range tests {
		if got := shouldRun(tc.policy, tc.power); got != tc.want {
			t.Errorf("shouldRun(%q, %q) = %v, want %v", tc.policy, tc.power, got, tc.want)
		}
	}
}

func TestAfterEnd(t *testing.T) {
	tests := []struct {
		policy v1alpha2.RunPolicy
		o      podOutcome
		off    bool
	}{
		{v1alpha2.AlwaysOn, crashed, false},
		{v1alpha2.AlwaysOn, guestShutdown, false},
		{v1alpha2.AlwaysOnUnlessStoppedManually, crashed, false},
		{v1alpha2.AlwaysOnUnlessStoppedManually, guestShutdown, true},
		{v1alpha2.Manual, crashed, true},
		{v1alpha2.Manual, guestShutdown, true},
		{v1alpha2.AlwaysOff, crashed, true},
		// A fenced node's VMs start elsewhere only under the policies that keep them on.
		{v1alpha2.AlwaysOn, nodeFenced, false},
		{v1alpha2.AlwaysOnUnlessStoppedManually, nodeFenced, false},
		{v1alpha2.Manual, nodeFenced, true},
		{v1alpha2.AlwaysOff, nodeFenced, true},
	}
	for _, tc := range tests {
		off, reason := afterEnd(tc.policy, tc.o)
		if off != tc.off || reason == "" {
			t.Errorf("afterEnd(%s, %d) = %v %q, want off=%v and a reason", tc.policy, tc.o, off, reason, tc.off)
		}
	}
}

func TestRestartDelay(t *testing.T) {
	want := []time.Duration{0, 5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 2 * time.Minute, 2 * time.Minute}
	for i, w := range want {
		if got := restartDelay(int32(i)); got != w {
			t.Errorf("restartDelay(%d) = %v, want %v", i, got, w)
		}
	}
}

func TestPreferNotOn(t *testing.T) {
	vm := &v1alpha2.VirtualMachine{}
	vm.Name, vm.Namespace = "v", "default"
	vm.Spec.Affinity = &v1alpha2.VirtualMachineAffinity{}
	pod := launcherPod(vm, nil, "img", 1, nil, NodeSide{}, podDevices{})
	preferNotOn(pod, "node-3")
	terms := pod.Spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution
	if len(terms) != 1 || terms[0].Preference.MatchExpressions[0].Values[0] != "node-3" ||
		terms[0].Preference.MatchExpressions[0].Operator != corev1.NodeSelectorOpNotIn {
		t.Fatalf("preferred terms %+v", terms)
	}
	if vm.Spec.Affinity.NodeAffinity != nil {
		t.Error("the VM's own affinity was changed")
	}
}
