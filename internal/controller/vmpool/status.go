package vmpool

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// counts are the replicas' numbers the status shows.
type counts struct {
	all, active, ready, updated int32
}

func (s *scope) count() counts {
	var c counts
	for i := range s.vms {
		vm := &s.vms[i]
		c.all++
		if !vm.DeletionTimestamp.IsZero() {
			continue
		}
		c.active++
		if meta.IsStatusConditionTrue(vm.Status.Conditions, v1alpha2.VMConditionRunning) {
			c.ready++
		}
		if vm.Labels[v1alpha2.LabelPoolTemplateHash] == s.hash {
			c.updated++
		}
	}
	return c
}

// conditions derives the pool's conditions from what the reconcile saw.
func (s *scope) conditions(st *v1alpha2.VirtualMachinePoolStatus, c counts) {
	gen := s.pool.Generation
	want := int32(wanted(s.pool))
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	if c.ready >= want {
		set(v1alpha2.PoolConditionAvailable, metav1.ConditionTrue, v1alpha2.ReasonPoolAllReplicasReady, fmt.Sprintf("%d of %d replicas are ready", c.ready, want))
	} else {
		set(v1alpha2.PoolConditionAvailable, metav1.ConditionFalse, v1alpha2.ReasonPoolInsufficientReadyReplicas, fmt.Sprintf("%d of %d replicas are ready", c.ready, want))
	}
	switch {
	case s.surplus > 0:
		set(v1alpha2.PoolConditionProgressing, metav1.ConditionFalse, v1alpha2.ReasonPoolReplicasProgressing,
			fmt.Sprintf("%d replicas above spec.replicas stay: scaleDownPolicy Explicit removes none (set NewestFirst or OldestFirst to let the pool remove them)", s.surplus))
	case s.problem != "":
		set(v1alpha2.PoolConditionProgressing, metav1.ConditionFalse, v1alpha2.ReasonPoolReplicasProgressing,
			fmt.Sprintf("%d replicas exist, %d wanted: %s", c.all, want, s.problem))
	case c.all != want:
		set(v1alpha2.PoolConditionProgressing, metav1.ConditionTrue, v1alpha2.ReasonPoolReplicasProgressing,
			fmt.Sprintf("%d replicas exist (%d Terminating), %d wanted", c.all, c.all-c.active, want))
	default:
		meta.RemoveStatusCondition(&st.Conditions, v1alpha2.PoolConditionProgressing)
	}
	if c.updated == c.active {
		set(v1alpha2.PoolConditionSynced, metav1.ConditionTrue, v1alpha2.ReasonPoolSynced, "every replica is on the current virtualMachineTemplate")
	} else {
		set(v1alpha2.PoolConditionSynced, metav1.ConditionFalse, v1alpha2.ReasonPoolRolloutInProgress,
			fmt.Sprintf("%d of %d replicas are on an older virtualMachineTemplate: Ferry does not roll replicas, they take the template when they are made again", c.active-c.updated, c.active))
	}
}

// writeStatus writes the pool's status once, with the optimistic lock.
func (r *Reconciler) writeStatus(ctx context.Context, s *scope) error {
	c := s.count()
	st := s.pool.Status.DeepCopy()
	st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = c.all, c.ready, c.updated
	st.DesiredTemplateHash = s.hash
	st.Selector = labels.SelectorFromSet(labels.Set{v1alpha2.LabelPoolUID: string(s.pool.UID)}).String()
	st.ObservedGeneration = s.pool.Generation
	s.conditions(st, c)
	if equality.Semantic.DeepEqual(*st, s.pool.Status) {
		return nil
	}
	orig := s.pool.DeepCopy()
	s.pool.Status = *st
	return r.Client.Status().Patch(ctx, s.pool, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}
