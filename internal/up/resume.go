package up

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
)

// endLostLaunchers ends the launcher pods that an earlier run of `ferry up` left Running on
// its nodes: their processes died with it (nothing of a node outlives `ferry up`). Until
// the node's agent said so, their VMs showed Running where nothing ran them, and an Evict
// started from a source that was gone and failed. It runs before the controller and the
// nodes start, so that the controller first sees the VMs as they are: to be started again.
// It returns how many pods it ended.
func endLostLaunchers(ctx context.Context, c client.Client, nodes []nodeNet) (int, error) {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.HasLabels{v1alpha2.LabelVMName}); err != nil {
		return 0, fmt.Errorf("listing the launcher pods of the previous run: %w", err)
	}
	ended := 0
	for i := range pods.Items {
		p := &pods.Items[i]
		ours := slices.ContainsFunc(nodes, func(n nodeNet) bool { return n.Name == p.Spec.NodeName })
		if !ours || p.Status.Phase != corev1.PodRunning || !p.DeletionTimestamp.IsZero() || len(p.Spec.Containers) == 0 {
			continue
		}
		p.Status = *kubelet.FailedStatus(p, kubelet.ReasonNodeRestarted, "ferry up restarted: the VM's process ended with its previous run")
		if err := c.Status().Update(ctx, p); err != nil && !apierrors.IsNotFound(err) {
			return ended, fmt.Errorf("ending the launcher pod %s/%s of the previous run: %w", p.Namespace, p.Name, err)
		}
		ended++
	}
	return ended, nil
}
