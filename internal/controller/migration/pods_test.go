package migration

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestTargetPodNamesItsSource: a target pod waits for the stream from its source's node
// only, and a pod that was itself a target (a second migration) drops the earlier source.
func TestTargetPodNamesItsSource(t *testing.T) {
	op := &v1alpha2.VirtualMachineOperation{ObjectMeta: metav1.ObjectMeta{Name: "evict"}}
	vm := &v1alpha2.VirtualMachine{}
	source := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{}},
		Spec: corev1.PodSpec{NodeName: "node-2", Containers: []corev1.Container{{Args: []string{"launcher", "--vm", "a", "--incoming", "--incoming-from", "node-1", "--incoming-from=node-0"}}}}}
	got := targetPod(op, source, vm).Spec.Containers[0].Args
	want := []string{"launcher", "--vm", "a", "--incoming", "--incoming-from", "node-2"}
	if !slices.Equal(got, want) {
		t.Errorf("target arguments %q, want %q", got, want)
	}
}
