package fencing

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// taintUnreachable puts v1alpha2.TaintUnreachable on every node judged unreachable and
// takes it off the nodes that are reachable again. Without it the scheduler placed the
// VMs restarted from one failed node on other nodes that had failed at the same moment
// and were not fenced yet; those pods never started and were ended only when that node
// was fenced, or a minute later by Kubernetes' garbage collector of orphaned pods (the
// ~60 s tail of the scale benchmark's failovers).
func (r *Reconciler) taintUnreachable(ctx context.Context, verdicts []Verdict, nodes map[string]*corev1.Node) error {
	var errs []error
	for _, v := range verdicts {
		n := nodes[v.Node]
		if n == nil {
			continue
		}
		want := v.Action != Reachable
		if hasUnreachableTaint(n) == want || !want && r.beingFenced(v.Node) {
			// A node being fenced reads as reachable once its Leases are removed, a
			// moment before the Node is: it keeps the taint, so nothing is placed on it.
			continue
		}
		if err := r.setUnreachableTaint(ctx, n, want); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
			continue
		}
		if want {
			ctrl.LoggerFrom(ctx).Info("Node unreachable: no new pod is placed on it", "node", n.Name, "taint", v1alpha2.TaintUnreachable)
		} else {
			ctrl.LoggerFrom(ctx).Info("Node reachable again: pods may be placed on it", "node", n.Name)
		}
	}
	return errors.Join(errs...)
}

func hasUnreachableTaint(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == v1alpha2.TaintUnreachable })
}

// setUnreachableTaint adds or removes the taint on the Node as it is now (past the cache),
// keeping every other taint: a patch that carries the Node's resourceVersion, redone on a
// conflict.
func (r *Reconciler) setUnreachableTaint(ctx context.Context, node *corev1.Node, on bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var n corev1.Node
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(node), &n); err != nil {
			return client.IgnoreNotFound(err)
		}
		if n.UID != node.UID || hasUnreachableTaint(&n) == on {
			return nil
		}
		orig := n.DeepCopy()
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == v1alpha2.TaintUnreachable })
		if on {
			now := metav1.NewTime(r.Now())
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: v1alpha2.TaintUnreachable, Effect: corev1.TaintEffectNoSchedule, TimeAdded: &now})
		}
		return client.IgnoreNotFound(r.Client.Patch(ctx, &n, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})))
	})
}

// beingFenced tells whether a fencing of the node runs now.
func (r *Reconciler) beingFenced(node string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fencing[node]
}
