package migration

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/power"
)

// use is one migration holding a slot: an outbound one from SourceNode while it is
// scheduled, prepared or transferred, an inbound one into TargetNode while transferred.
type use struct {
	uid        types.UID
	phase      v1alpha2.MigrationPhase
	sourceNode string
	targetNode string
}

// slots are the grants this controller made that its cache may not show yet. Several
// operations reconcile at once, and an operation's status write reaches the cache a moment
// after it is made: without these, two operations could both see the last slot free.
type slots struct {
	mu     sync.Mutex
	grants map[types.UID]grant

	// cfg is the configuration the slot check goes by, read at cfgAt (slotConfig).
	cfgMu sync.Mutex
	cfg   Config
	cfgAt time.Time
}

type grant struct {
	use
	at time.Time
}

// grantTTL bounds how long a grant stands in for a status the cache has not shown.
const grantTTL = time.Minute

// slotRetry is how often an operation waiting for a slot asks again on its own: only a
// backstop, as the end of a migration wakes the operations waiting for its node
// (waitersOf). At 10 s, 700 operations waiting in a drain of 25 nodes filled the queue
// faster than 8 workers emptied it, and each running migration's next step waited behind
// them (100 × 30 scale bench: 5 evacuations a minute).
const slotRetry = 30 * time.Second

// configTTL is how long the slot check goes by the configuration it last read: waiting
// operations ask for slots many times a second, and a read of the ConfigMap past the cache
// each time cost an apiserver round trip per ask.
const configTTL = 5 * time.Second

// waitersOf wakes the operations waiting for a slot of the source node of a migration that
// ended, as the slot it held is free now.
func (r *Reconciler) waitersOf(ctx context.Context, o client.Object) []reconcile.Request {
	op, ok := o.(*v1alpha2.VirtualMachineOperation)
	if !ok || !isMigration(op.Spec.Type) || !op.Finished() || op.Status.Migration == nil || op.Status.Migration.SourceNode == "" {
		return nil
	}
	var ops v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &ops, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range ops.Items {
		w := &ops.Items[i]
		ms := w.Status.Migration
		if isMigration(w.Spec.Type) && w.Status.Phase == v1alpha2.OpPending && ms != nil && ms.SourceNode == op.Status.Migration.SourceNode {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(w)})
		}
	}
	return out
}

// slotConfig is the effective configuration as read at most configTTL ago.
func (r *Reconciler) slotConfig(ctx context.Context) Config {
	r.slots.cfgMu.Lock()
	defer r.slots.cfgMu.Unlock()
	if now := r.Now(); r.slots.cfgAt.IsZero() || now.Sub(r.slots.cfgAt) > configTTL {
		r.slots.cfg, _ = r.effective(ctx) // on a bad ConfigMap, the flags' (its error is reported where a migration starts)
		r.slots.cfgAt = now
	}
	return r.slots.cfg
}

func (s *slots) drop(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.grants, uid)
}

// reached says whether phase p is at or past the grant's phase, so the cache shows it.
func reached(p, want v1alpha2.MigrationPhase) bool {
	order := map[v1alpha2.MigrationPhase]int{v1alpha2.MigrationScheduling: 1, v1alpha2.MigrationPreparing: 2, v1alpha2.MigrationTransferring: 3, v1alpha2.MigrationDone: 4}
	return order[p] >= order[want]
}

// inFlight are the migrations that hold a slot: past Pending and not ended, as the cache
// shows them or as this controller granted them since. The caller holds r.slots.mu.
func (r *Reconciler) inFlight(ctx context.Context, except *v1alpha2.VirtualMachineOperation) ([]use, error) {
	var ops v1alpha2.VirtualMachineOperationList
	// Every operation of the cluster, only read: no copy of each (at 3,000 VMs a drain
	// keeps thousands, and every waiting operation asks again every 2 s).
	if err := r.Client.List(ctx, &ops, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var out []use
	seen := map[types.UID]v1alpha2.MigrationPhase{}
	for _, op := range ops.Items {
		if !isMigration(op.Spec.Type) {
			continue
		}
		ms := op.Status.Migration
		if op.Finished() || ms == nil {
			if op.Finished() {
				delete(r.slots.grants, op.UID)
			}
			continue
		}
		seen[op.UID] = ms.Phase
		if op.UID == except.UID {
			continue
		}
		switch ms.Phase {
		case v1alpha2.MigrationScheduling, v1alpha2.MigrationPreparing, v1alpha2.MigrationTransferring:
			out = append(out, use{uid: op.UID, phase: ms.Phase, sourceNode: ms.SourceNode, targetNode: ms.TargetNode})
		}
	}
	now := r.Now()
	for uid, g := range r.slots.grants {
		if p, ok := seen[uid]; (ok && reached(p, g.phase)) || now.Sub(g.at) > grantTTL {
			delete(r.slots.grants, uid) // the cache has caught up, or the grant was never used
			continue
		}
		if uid == except.UID {
			continue
		}
		replaced := false
		for i := range out {
			if out[i].uid == uid {
				out[i], replaced = g.use, true
			}
		}
		if !replaced {
			out = append(out, g.use)
		}
	}
	return out, nil
}

// grant records that op takes a slot in phase u.phase until the cache shows it there.
// The caller holds r.slots.mu.
func (r *Reconciler) grant(u use) {
	if r.slots.grants == nil {
		r.slots.grants = map[types.UID]grant{}
	}
	r.slots.grants[u.uid] = grant{use: u, at: r.Now()}
}

func (r *Reconciler) maxParallel(ctx context.Context) (int, error) {
	if r.Config.MaxParallel > 0 {
		return r.Config.MaxParallel, nil
	}
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return 0, err
	}
	return max(2, len(nodes.Items)), nil
}

// takeSlot says why the operation must wait for the cluster or its source node, or takes
// an outbound slot for it and returns "". A taken slot the operation does not use (its
// step fails or waits) must be given back with r.slots.drop.
func (r *Reconciler) takeSlot(ctx context.Context, op *v1alpha2.VirtualMachineOperation, sourceNode string) (string, error) {
	limit, err := r.maxParallel(ctx)
	if err != nil {
		return "", err
	}
	cfg := r.slotConfig(ctx) // may be an API read: not under the lock
	r.slots.mu.Lock()
	defer r.slots.mu.Unlock()
	busy, err := r.inFlight(ctx, op)
	if err != nil {
		return "", err
	}
	if len(busy) >= limit {
		return fmt.Sprintf("waiting: %d migrations already run in the cluster (limit %d)", len(busy), limit), nil
	}
	out := 0
	for _, b := range busy {
		if b.sourceNode == sourceNode {
			out++
		}
	}
	if out >= cfg.MaxOutboundPerNode {
		return fmt.Sprintf("waiting: node %s already sends %d migration(s) (limit %d)", sourceNode, out, cfg.MaxOutboundPerNode), nil
	}
	r.grant(use{uid: op.UID, phase: v1alpha2.MigrationScheduling, sourceNode: sourceNode})
	return "", nil
}

// takeInbound says why the operation must wait for its target node, or takes an inbound
// slot for it and returns "".
func (r *Reconciler) takeInbound(ctx context.Context, op *v1alpha2.VirtualMachineOperation, targetNode string) (string, error) {
	r.slots.mu.Lock()
	defer r.slots.mu.Unlock()
	busy, err := r.inFlight(ctx, op)
	if err != nil {
		return "", err
	}
	in := 0
	for _, b := range busy {
		if b.phase == v1alpha2.MigrationTransferring && b.targetNode == targetNode {
			in++
		}
	}
	if in >= r.Config.MaxInboundPerNode {
		return fmt.Sprintf("waiting: node %s already receives %d migration(s) (limit %d)", targetNode, in, r.Config.MaxInboundPerNode), nil
	}
	ms := op.Status.Migration
	r.grant(use{uid: op.UID, phase: v1alpha2.MigrationTransferring, sourceNode: ms.SourceNode, targetNode: targetNode})
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
