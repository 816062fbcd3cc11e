package migration

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/power"
)

// inFlight are the migrations that hold a slot: past Pending and not ended.
func (r *Reconciler) inFlight(ctx context.Context, except *v1alpha2.VirtualMachineOperation) ([]v1alpha2.VirtualMachineOperation, error) {
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &ops); err != nil {
		return nil, err
	}
	var out []v1alpha2.VirtualMachineOperation
	for _, op := range ops.Items {
		if op.UID == except.UID || !isMigration(op.Spec.Type) || op.Finished() || op.Status.Migration == nil {
			continue
		}
		switch op.Status.Migration.Phase {
		case v1alpha2.MigrationScheduling, v1alpha2.MigrationPreparing, v1alpha2.MigrationTransferring:
			out = append(out, op)
		}
	}
	return out, nil
}

func (r *Reconciler) maxParallel(ctx context.Context) (int, error) {
	if r.Config.MaxParallel > 0 {
		return r.Config.MaxParallel, nil
	}
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes); err != nil {
		return 0, err
	}
	return max(2, len(nodes.Items)), nil
}

// slotFree says why the operation must wait for the cluster or its source node, or "".
func (r *Reconciler) slotFree(ctx context.Context, op *v1alpha2.VirtualMachineOperation, sourceNode string) (string, error) {
	busy, err := r.inFlight(ctx, op)
	if err != nil {
		return "", err
	}
	limit, err := r.maxParallel(ctx)
	if err != nil {
		return "", err
	}
	if len(busy) >= limit {
		return fmt.Sprintf("waiting: %d migrations already run in the cluster (limit %d)", len(busy), limit), nil
	}
	cfg, _ := r.effective(ctx)
	out := 0
	for _, b := range busy {
		if b.Status.Migration.SourceNode == sourceNode {
			out++
		}
	}
	if out >= cfg.MaxOutboundPerNode {
		return fmt.Sprintf("waiting: node %s already sends %d migration(s) (limit %d)", sourceNode, out, cfg.MaxOutboundPerNode), nil
	}
	return "", nil
}

// inboundFree says why the operation must wait for its target node, or "".
func (r *Reconciler) inboundFree(ctx context.Context, op *v1alpha2.VirtualMachineOperation, targetNode string) (string, error) {
	busy, err := r.inFlight(ctx, op)
	if err != nil {
		return "", err
	}
	in := 0
	for _, b := range busy {
		if b.Status.Migration.Phase == v1alpha2.MigrationTransferring && b.Status.Migration.TargetNode == targetNode {
			in++
		}
	}
	if in >= r.Config.MaxInboundPerNode {
		return fmt.Sprintf("waiting: node %s already receives %d migration(s) (limit %d)", targetNode, in, r.Config.MaxInboundPerNode), nil
	}
	return "", nil
}

// otherMigration names an earlier unfinished migration of the same VM, or "".
func (r *Reconciler) otherMigration(ctx context.Context, op *v1alpha2.VirtualMachineOperation) (string, error) {
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &ops, client.InNamespace(op.Namespace), client.MatchingFields{power.IndexVMName: op.Spec.VirtualMachineName}); err != nil {
		return "", err
	}
	for _, o := range ops.Items {
		if o.UID == op.UID || !isMigration(o.Spec.Type) || o.Finished() || !o.DeletionTimestamp.IsZero() {
			continue
		}
		started := o.Status.Migration != nil && o.Status.Migration.Phase != v1alpha2.MigrationPending && o.Status.Migration.Phase != ""
		older := o.CreationTimestamp.Before(&op.CreationTimestamp) || (o.CreationTimestamp.Equal(&op.CreationTimestamp) && o.Name < op.Name)
		if started || older {
			return o.Name, nil
		}
	}
	return "", nil
}
