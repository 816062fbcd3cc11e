package kubelet

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// The gate follows QEMU, never the guest's console: a quiet guest is running, a panicked or
// I/O-stopped one is not, with the evidence as the reason.
func TestGuestConditionFollowsQEMU(t *testing.T) {
	for _, c := range []struct {
		g      GuestState
		status corev1.ConditionStatus
		reason string
	}{
		{GuestState{}, corev1.ConditionFalse, v1alpha2.ReasonGuestNotRunning},
		{GuestState{QEMU: "running"}, corev1.ConditionTrue, v1alpha2.ReasonGuestRunning},
		{GuestState{QEMU: "inmigrate", IncomingURI: "tcp:1.2.3.4:5"}, corev1.ConditionFalse, v1alpha2.ReasonGuestNotRunning},
		{GuestState{QEMU: "postmigrate"}, corev1.ConditionFalse, v1alpha2.ReasonGuestNotRunning},
		{GuestState{QEMU: "paused"}, corev1.ConditionFalse, v1alpha2.ReasonGuestNotRunning},
		{GuestState{QEMU: "guest-panicked", Fault: &GuestFault{Reason: v1alpha2.ReasonGuestPanicked, Message: "panicked"}}, corev1.ConditionFalse, v1alpha2.ReasonGuestPanicked},
		{GuestState{QEMU: "io-error", Fault: &GuestFault{Reason: v1alpha2.ReasonGuestIOError, Message: "no space"}}, corev1.ConditionFalse, v1alpha2.ReasonGuestIOError},
	} {
		status, reason, msg := guestCondition(c.g)
		if status != c.status || reason != c.reason || msg == "" {
			t.Errorf("%+v: %s %s %q, want %s %s", c.g, status, reason, msg, c.status, c.reason)
		}
	}
}

func TestAgentConditionCarriesTheReport(t *testing.T) {
	if s, r, _ := agentCondition(GuestState{QEMU: "running"}); s != corev1.ConditionFalse || r != v1alpha2.ReasonAgentNotReady {
		t.Errorf("no agent: %s %s", s, r)
	}
	s, r, msg := agentCondition(GuestState{Agent: &v1alpha2.GuestAgentReport{OS: &v1alpha2.GuestOSInfo{PrettyName: "Debian GNU/Linux 12 (bookworm)"}}})
	if s != corev1.ConditionTrue || r != v1alpha2.ReasonAgentReady || !strings.Contains(msg, "bookworm") {
		t.Errorf("agent: %s %s %q", s, r, msg)
	}
	huge := &v1alpha2.GuestAgentReport{Hostname: strings.Repeat("x", 2*maxAgentMessage)}
	if _, _, msg := agentCondition(GuestState{Agent: huge}); len(msg) > maxAgentMessage {
		t.Errorf("an oversized report went into the pod: %d bytes", len(msg))
	}
}
