package vm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestLauncherPodPullsIfNotPresent: a launcher pod names its pull policy, so that neither
// a :latest tag nor a missing one makes the kubelet pull at every VM start (and fail on a
// node that reaches no registry but has the image).
func TestLauncherPodPullsIfNotPresent(t *testing.T) {
	vm := &v1alpha2.VirtualMachine{}
	vm.Name, vm.Namespace = "v", "default"
	for _, image := range []string{"ferryvm/ferry:0.2.0", "ferryvm/ferry:latest", "ferryvm/ferry"} {
		pod := launcherPod(vm, nil, image, 1, nil, NodeSide{})
		for _, c := range pod.Spec.Containers {
			if c.Image != image || c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("image %s: container %s has image %s, pull policy %q, want %s", image, c.Name, c.Image, c.ImagePullPolicy, corev1.PullIfNotPresent)
			}
		}
	}
}
