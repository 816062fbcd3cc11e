package up

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// ferry up starting again ends the launcher pods its previous run left Running on its
// nodes, and only those: their VMs then show that they are to start again.
func TestEndLostLaunchers(t *testing.T) {
	pod := func(name, node string, phase corev1.PodPhase, launcher bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "compute", Image: "ferry"}}},
			Status: corev1.PodStatus{Phase: phase}}
		if launcher {
			p.Labels = map[string]string{v1alpha2.LabelVMName: name}
		}
		return p
	}
	objs := []client.Object{
		pod("lost", "node-1", corev1.PodRunning, true),
		pod("lost-too", "node-2", corev1.PodRunning, true),
		pod("not-started", "node-1", corev1.PodPending, true),
		pod("ended", "node-1", corev1.PodSucceeded, true),
		pod("elsewhere", "sim-1", corev1.PodRunning, true),
		pod("not-a-launcher", "node-1", corev1.PodRunning, false),
	}
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).WithStatusSubresource(objs...).Build()
	ctx := context.Background()
	n, err := endLostLaunchers(ctx, c, planNodes(2, false))
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("ended %d pods, want 2", n)
	}
	for _, o := range objs {
		var p corev1.Pod
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), &p); err != nil {
			t.Fatal(err)
		}
		lost := p.Name == "lost" || p.Name == "lost-too"
		if ended := p.Status.Phase == corev1.PodFailed; ended != lost {
			t.Errorf("pod %s: phase %s", p.Name, p.Status.Phase)
		}
		if lost && (!launcherpod.Ended(&p) || launcherpod.GuestRunning(&p) || launcherpod.EndMessage(&p) == "") {
			t.Errorf("pod %s does not read as ended: %+v", p.Name, p.Status)
		}
	}
}
