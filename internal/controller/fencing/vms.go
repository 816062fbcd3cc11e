package fencing

import (
	"context"
	"errors"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// markInBackground runs a pass of markVMs beside the reconcile, unless one runs already,
// and tells whether nothing is left to redo (false: look again soon). The pass writes a
// status per VM whose condition changes, a dozen per failing node: done inline, it held
// up the next reconcile, and with it the fencing of the nodes that had failed at the same
// time but whose watchdog period ended a moment later (25 × 10, 5 nodes failed: fenced
// 2.5 s after their time).
func (r *Reconciler) markInBackground(ctx context.Context, stale map[string]Verdict) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.marking {
		return false
	}
	failed := r.markFailed
	r.marking = true
	go func() {
		// Not bound to the reconcile's context, which may end with it.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		retry, err := r.markVMs(mctx, stale)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Could not mark the VMs of unreachable nodes")
		}
		r.mu.Lock()
		r.marking, r.markFailed = false, err != nil || retry
		r.mu.Unlock()
		if err != nil || retry {
			r.wakeUp()
		}
	}()
	return !failed
}

// markVMs keeps the NodeReachable condition of VMs: False, saying what happens next, on
// VMs whose launcher pod is on an unreachable node; removed from all others. retry tells
// that a write met a newer VM and must be redone.
func (r *Reconciler) markVMs(ctx context.Context, stale map[string]Verdict) (retry bool, err error) {
	actions := make(map[string]Action, len(stale))
	for n, v := range stale {
		actions[n] = v.Action
	}
	now := r.Now()
	if maps.Equal(actions, r.marked) && now.Sub(r.markedAt) < remarkEvery {
		return false, nil
	}
	defer func() {
		if err == nil && !retry {
			r.marked, r.markedAt = actions, now
		}
	}()
	// Every launcher pod and VM, read from the cache without copies; a VM is copied only
	// when its condition changes.
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.HasLabels{v1alpha2.LabelVMName}, client.UnsafeDisableDeepCopy); err != nil {
		return false, err
	}
	fenced := r.fencedNodes(now)
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return false, err
	}
	exists := make(map[string]bool, len(nodes.Items))
	for _, n := range nodes.Items {
		exists[n.Name] = true
	}
	on := map[types.NamespacedName]Verdict{}
	newest := map[types.NamespacedName]*corev1.Pod{} // each VM's newest live pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if !p.DeletionTimestamp.IsZero() || launcherpod.Ended(p) {
			continue
		}
		if at, ok := fenced[p.Spec.NodeName]; ok && !p.CreationTimestamp.After(at) || p.Spec.NodeName != "" && !exists[p.Spec.NodeName] {
			// Its node is being fenced, or was removed: the pod ended, though the cache
			// may not show it yet (the fencing removes the node's Lease before the Node,
			// and for that moment the node read as reachable again); the VM controller
			// takes the condition away in its status write of the pod's end.
			continue
		}
		vm := types.NamespacedName{Namespace: p.Namespace, Name: p.Labels[v1alpha2.LabelVMName]}
		if n := newest[vm]; n == nil || n.CreationTimestamp.Before(&p.CreationTimestamp) {
			newest[vm] = p
		}
		if v, ok := stale[p.Spec.NodeName]; ok {
			on[vm] = v
		}
	}
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.UnsafeDisableDeepCopy); err != nil {
		return false, err
	}
	type write struct{ orig, vm *v1alpha2.VirtualMachine }
	var writes []write
	for i := range vms.Items {
		orig := &vms.Items[i] // the cache's: never written
		key := types.NamespacedName{Namespace: orig.Namespace, Name: orig.Name}
		v, unreachable := on[key]
		c := meta.FindStatusCondition(orig.Status.Conditions, v1alpha2.VMConditionNodeReachable)
		if !unreachable && (c == nil || launcherpod.NodeReachableOutdated(orig.Status.Conditions, newest[key])) {
			// A VM whose pod was ended by fencing loses the condition in the VM
			// controller's write of that end or of its restart (vm/status.go): a write of
			// its own here was one more per restarted VM.
			continue
		}
		vm := orig.DeepCopy()
		if unreachable {
			reason := map[Action]string{Unreachable: v1alpha2.ReasonNodeUnreachable, Pending: v1alpha2.ReasonFencingPending, Paused: v1alpha2.ReasonFencingPaused}[v.Action]
			msg := vmMessage(vm, v)
			if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionNodeReachable); c != nil && c.Reason == reason {
				continue // the message's age may differ; the reason is what matters
			}
			meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{Type: v1alpha2.VMConditionNodeReachable, Status: metav1.ConditionFalse,
				Reason: reason, Message: msg, ObservedGeneration: vm.Generation})
			r.Recorder.Event(vm, corev1.EventTypeWarning, reason, msg)
		} else if !meta.RemoveStatusCondition(&vm.Status.Conditions, v1alpha2.VMConditionNodeReachable) {
			continue
		}
		writes = append(writes, write{orig, vm})
	}
	// A few at a time: one after another, a dozen VMs of each of several failing nodes
	// held this (single) reconcile for seconds, and with it the fencing of the next node
	// (scale bench, 4 nodes failed at once: fenced 4 s after their time).
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, w := range writes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			err := r.Client.Status().Patch(ctx, w.vm, client.MergeFromWithOptions(w.orig, client.MergeFromWithOptimisticLock{}))
			if err == nil || apierrors.IsNotFound(err) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if apierrors.IsConflict(err) {
				retry = true
				return
			}
			errs = append(errs, err)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return false, err
	}
	return retry, nil
}

// vmMessage says what happens to a VM on a stale node, given its runPolicy.
func vmMessage(vm *v1alpha2.VirtualMachine, v Verdict) string {
	if v.Action != Pending {
		return v.Why
	}
	switch vm.Spec.RunPolicy {
	case v1alpha2.Manual:
		return v.Why + "; this VM's runPolicy Manual does not restart it: start it again with ferry v start"
	}
	return v.Why
}

// fencedMemory is how long a fenced node's pods count as ended for markVMs.
const fencedMemory = 10 * time.Minute

// fencedNodes is a copy of fencedAt, without the nodes fenced longer than fencedMemory ago.
func (r *Reconciler) fencedNodes(now time.Time) map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]time.Time, len(r.fencedAt))
	for n, at := range r.fencedAt {
		if now.Sub(at) > fencedMemory {
			delete(r.fencedAt, n)
			continue
		}
		out[n] = at
	}
	return out
}
