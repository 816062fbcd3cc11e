package fencing

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// A node being fenced reads as reachable once its Leases are removed, before the Node is:
// it keeps its taint then; a node that is really reachable again loses it.
func TestNodeBeingFencedKeepsItsTaint(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fencing bool
		want    bool
	}{
		{"being fenced", true, true},
		{"reachable again", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", UID: "u1"},
				Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: v1alpha2.TaintUnreachable, Effect: corev1.TaintEffectNoSchedule}}}}
			c := fake.NewClientBuilder().WithObjects(n).Build()
			r := &Reconciler{Client: c, APIReader: c, fencing: map[string]bool{"n1": tc.fencing}}
			if err := r.taintUnreachable(context.Background(), []Verdict{{Node: "n1", Action: Reachable}}, map[string]*corev1.Node{"n1": n}); err != nil {
				t.Fatal(err)
			}
			var got corev1.Node
			if err := c.Get(context.Background(), client.ObjectKey{Name: "n1"}, &got); err != nil {
				t.Fatal(err)
			}
			if hasUnreachableTaint(&got) != tc.want {
				t.Errorf("taint kept %v, want %v", hasUnreachableTaint(&got), tc.want)
			}
		})
	}
}
