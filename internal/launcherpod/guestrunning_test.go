package launcherpod

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestGuestRunning: the guest runs when the pod is Ready, or when it runs and the agent's
// gate says so before a real kubelet has folded the gate into Ready; never on a pod that
// does not run or whose gate is False.
func TestGuestRunning(t *testing.T) {
	pod := func(phase corev1.PodPhase, ready, gate corev1.ConditionStatus) *corev1.Pod {
		p := &corev1.Pod{Status: corev1.PodStatus{Phase: phase}}
		if ready != "" {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: ready})
		}
		if gate != "" {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: v1alpha2.PodConditionGuestReady, Status: gate})
		}
		return p
	}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"Ready", pod(corev1.PodRunning, corev1.ConditionTrue, corev1.ConditionTrue), true},
		{"gate before the kubelet's Ready", pod(corev1.PodRunning, corev1.ConditionFalse, corev1.ConditionTrue), true},
		{"gate False", pod(corev1.PodRunning, corev1.ConditionFalse, corev1.ConditionFalse), false},
		{"no gate yet", pod(corev1.PodRunning, corev1.ConditionFalse, ""), false},
		{"pod ended, stale gate", pod(corev1.PodSucceeded, corev1.ConditionFalse, corev1.ConditionTrue), false},
		{"pod pending", pod(corev1.PodPending, "", corev1.ConditionTrue), false},
	} {
		if got := GuestRunning(c.pod); got != c.want {
			t.Errorf("%s: GuestRunning = %v, want %v", c.name, got, c.want)
		}
	}
}
