package launcherpod

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// A launcher's end reads the same whether Ferry's own node agent ran the pod (it names the
// reason) or a real kubelet did (it shows the exit code and "Error").
func TestEndsReadTheSameFromEitherKubelet(t *testing.T) {
	ended := func(phase corev1.PodPhase, code int32, reason string) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason}},
		}}}}
	}
	for _, c := range []struct {
		name                 string
		pod                  *corev1.Pod
		migrated, superseded bool
	}{
		{"ferry agent: migrated", ended(corev1.PodSucceeded, 3, v1alpha2.ReasonPodMigrated), true, false},
		{"kubelet: migrated", ended(corev1.PodFailed, 3, "Error"), true, false},
		{"ferry agent: superseded", ended(corev1.PodFailed, 4, v1alpha2.ReasonSuperseded), false, true},
		{"kubelet: superseded", ended(corev1.PodFailed, 4, "Error"), false, true},
		{"kubelet: guest shut down", ended(corev1.PodSucceeded, 0, "Completed"), false, false},
		{"kubelet: QEMU died", ended(corev1.PodFailed, 2, "Error"), false, false},
		{"running", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, false, false},
	} {
		if got := MigratedAway(c.pod); got != c.migrated {
			t.Errorf("%s: MigratedAway = %v, want %v", c.name, got, c.migrated)
		}
		if got := Superseded(c.pod); got != c.superseded {
			t.Errorf("%s: Superseded = %v, want %v", c.name, got, c.superseded)
		}
	}
}
