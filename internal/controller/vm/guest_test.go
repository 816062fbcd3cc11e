package vm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func podWith(phase corev1.PodPhase, conds ...corev1.PodCondition) *corev1.Pod {
	return &corev1.Pod{Status: corev1.PodStatus{Phase: phase, Conditions: conds}}
}

func TestGuestFaultIsEvidenceOnly(t *testing.T) {
	gate := func(s corev1.ConditionStatus, reason string) corev1.PodCondition {
		return corev1.PodCondition{Type: v1alpha2.PodConditionGuestReady, Status: s, Reason: reason}
	}
	for _, c := range []struct {
		pod   *corev1.Pod
		fault string
	}{
		{podWith(corev1.PodRunning, gate(corev1.ConditionTrue, v1alpha2.ReasonGuestRunning)), ""},
		{podWith(corev1.PodRunning, gate(corev1.ConditionFalse, v1alpha2.ReasonGuestNotRunning)), ""},
		{podWith(corev1.PodRunning, gate(corev1.ConditionFalse, v1alpha2.ReasonGuestPanicked)), v1alpha2.ReasonGuestPanicked},
		{podWith(corev1.PodRunning, gate(corev1.ConditionFalse, v1alpha2.ReasonGuestIOError)), v1alpha2.ReasonGuestIOError},
		{podWith(corev1.PodSucceeded, gate(corev1.ConditionFalse, v1alpha2.ReasonGuestPanicked)), ""},
		{nil, ""},
	} {
		got := ""
		if f := guestFault(c.pod); f != nil {
			got = f.Reason
		}
		if got != c.fault {
			t.Errorf("%+v: fault %q, want %q", c.pod, got, c.fault)
		}
	}
}

func TestDeriveAgent(t *testing.T) {
	agent := func(s corev1.ConditionStatus, msg string) corev1.PodCondition {
		return corev1.PodCondition{Type: v1alpha2.PodConditionGuestAgent, Status: s, Message: msg}
	}
	var st v1alpha2.VirtualMachineStatus
	deriveAgent(&st, podWith(corev1.PodRunning, agent(corev1.ConditionTrue, `{"os":{"id":"debian","prettyName":"Debian GNU/Linux 12 (bookworm)"},"hostname":"vm"}`)), 1)
	if c := meta.FindStatusCondition(st.Conditions, v1alpha2.VMConditionAgentReady); c == nil || c.Status != "True" || st.GuestOSInfo == nil || st.GuestOSInfo.ID != "debian" {
		t.Errorf("agent answering: %+v %+v", c, st.GuestOSInfo)
	}
	deriveAgent(&st, podWith(corev1.PodRunning, agent(corev1.ConditionTrue, `not json`)), 1)
	if c := meta.FindStatusCondition(st.Conditions, v1alpha2.VMConditionAgentReady); c == nil || c.Status != "True" || st.GuestOSInfo != nil {
		t.Errorf("unreadable report: %+v %+v", c, st.GuestOSInfo)
	}
	deriveAgent(&st, nil, 1)
	if c := meta.FindStatusCondition(st.Conditions, v1alpha2.VMConditionAgentReady); c == nil || c.Status != "False" || st.GuestOSInfo != nil {
		t.Errorf("VM not running: %+v %+v", c, st.GuestOSInfo)
	}
}

// The agent's report is the guest's own words, carried in a pod condition: whatever it
// holds, reading it never fails or panics.
func FuzzGuestAgentReport(f *testing.F) {
	f.Add(`{"os":{"id":"debian"},"interfaces":[{"name":"ens4","ipAddresses":["10.0.0.1"]}]}`)
	f.Add(`{"os":null}`)
	f.Add(`[]`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, msg string) {
		p := podWith(corev1.PodRunning, corev1.PodCondition{Type: v1alpha2.PodConditionGuestAgent, Status: corev1.ConditionTrue, Message: msg})
		if _, ok := guestAgent(p); !ok {
			t.Fatal("an answering agent read as not ready")
		}
		var st v1alpha2.VirtualMachineStatus
		deriveAgent(&st, p, 1)
	})
}
