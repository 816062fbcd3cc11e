package vmpool

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Event reasons.
const (
	EventReplicaCreated = "ReplicaCreated"
	EventReplicaRemoved = "ReplicaRemoved"
	EventDiskCollected  = "DiskCollected"
	EventReplicaRefused = "ReplicaRefused"
)

// wanted is spec.replicas (unset: none).
func wanted(pool *v1alpha2.VirtualMachinePool) int {
	if pool.Spec.Replicas == nil {
		return 0
	}
	return int(*pool.Spec.Replicas)
}

// active are the replicas not being deleted.
func (s *scope) active() []*v1alpha2.VirtualMachine {
	var out []*v1alpha2.VirtualMachine
	for i := range s.vms {
		if s.vms[i].DeletionTimestamp.IsZero() {
			out = append(out, &s.vms[i])
		}
	}
	return out
}

// scaleUp makes the replicas missing: a VM deleted by hand is replaced at once, while it
// still terminates.
func (r *Reconciler) scaleUp(ctx context.Context, s *scope) error {
	for n := wanted(s.pool) - len(s.active()); n > 0; n-- {
		name := s.pool.Name + "-" + randomSuffix()
		vm := r.replica(s, name, s.takeRetainDisks(r.now()))
		if err := r.Client.Create(ctx, vm); err != nil {
			if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
				// The template makes no valid VM (or a quota refuses it): say so where people look.
				s.problem = fmt.Sprintf("cannot make a replica: %v", err)
				r.Recorder.Event(s.pool, corev1.EventTypeWarning, EventReplicaRefused, s.problem)
			}
			return fmt.Errorf("making replica %s: %w", name, err)
		}
		ctrl.LoggerFrom(ctx).Info("Created a replica", "vm", name)
		r.Recorder.Eventf(s.pool, corev1.EventTypeNormal, EventReplicaCreated, "Created replica %s", name)
		s.vms = append(s.vms, *vm)
	}
	return nil
}

// scaleDown removes the replicas above spec.replicas, chosen by scaleDownPolicy. Their
// disks go once they are gone (releaseDisks).
func (r *Reconciler) scaleDown(ctx context.Context, s *scope) error {
	active := s.active()
	surplus := len(active) - wanted(s.pool)
	if surplus <= 0 {
		return nil
	}
	if s.pool.Spec.ScaleDownPolicy == v1alpha2.ScaleDownExplicit {
		s.surplus = surplus // the CRD refuses such a spec; this is a pool changed to Explicit meanwhile
		return nil
	}
	for _, vm := range pickForRemoval(active, s.pool.Spec.ScaleDownPolicy, surplus) {
		err := r.Client.Delete(ctx, vm, client.Preconditions{UID: &vm.UID})
		if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("removing replica %s: %w", vm.Name, err)
		}
		ctrl.LoggerFrom(ctx).Info("Removed a replica", "vm", vm.Name, "policy", s.pool.Spec.ScaleDownPolicy)
		r.Recorder.Eventf(s.pool, corev1.EventTypeNormal, EventReplicaRemoved, "Removed replica %s (%s)", vm.Name, s.pool.Spec.ScaleDownPolicy)
		now := metav1.Now()
		vm.DeletionTimestamp = &now // counted as Terminating from here on
	}
	return nil
}

// pickForRemoval returns the n replicas a scale-down removes: the newest or the oldest
// (by creation, then name).
func pickForRemoval(active []*v1alpha2.VirtualMachine, policy v1alpha2.ScaleDownPolicy, n int) []*v1alpha2.VirtualMachine {
	sorted := slices.Clone(active)
	slices.SortStableFunc(sorted, func(a, b *v1alpha2.VirtualMachine) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	if policy == v1alpha2.ScaleDownNewestFirst {
		slices.Reverse(sorted)
	}
	return sorted[:min(n, len(sorted))]
}

// replica is the VM of a new replica: the template with its VirtualDisk refs turned into
// the replica's disks (retain: the Retain disks it takes, by template).
func (r *Reconciler) replica(s *scope, name string, retain map[string]string) *v1alpha2.VirtualMachine {
	t := s.pool.Spec.VirtualMachineTemplate
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: s.pool.Namespace,
		Labels:      maps.Clone(t.Metadata.Labels),
		Annotations: maps.Clone(t.Metadata.Annotations),
	}}
	if vm.Labels == nil {
		vm.Labels = map[string]string{}
	}
	vm.Labels[v1alpha2.LabelPool] = s.pool.Name
	vm.Labels[v1alpha2.LabelPoolUID] = string(s.pool.UID)
	vm.Labels[v1alpha2.LabelPoolTemplateHash] = s.hash
	t.Spec.DeepCopyInto(&vm.Spec)
	for i, ref := range vm.Spec.BlockDeviceRefs {
		if ref.Kind != v1alpha2.DiskDevice {
			continue // images are shared by every replica
		}
		if d, ok := retain[ref.Name]; ok {
			vm.Spec.BlockDeviceRefs[i].Name = d
		} else {
			vm.Spec.BlockDeviceRefs[i].Name = deleteDiskName(name, ref.Name)
		}
	}
	_ = controllerutil.SetControllerReference(s.pool, vm, r.Client.Scheme())
	return vm
}

// deleteDiskName is the name of a replica's own (reclaim Delete) disk.
func deleteDiskName(replica, template string) string { return replica + "-" + template }

// retainDiskName is a new Retain disk's name.
func retainDiskName(pool, template string) string {
	return pool + "-" + template + "-" + randomSuffix()
}

// randomSuffix is 6 random hex digits, as in Deckhouse's replica names.
func randomSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// templateHash is a short hash of the pool's virtualMachineTemplate (label
// template-hash, status.desiredTemplateHash).
func templateHash(pool *v1alpha2.VirtualMachinePool) string {
	b, _ := json.Marshal(pool.Spec.VirtualMachineTemplate)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:5])
}

func isControlledBy(o metav1.Object, uid types.UID) bool {
	ref := metav1.GetControllerOf(o)
	return ref != nil && ref.UID == uid
}
