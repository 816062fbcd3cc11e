package vmpool

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// EventDiskNameTaken: a replica's disk cannot be made because a disk of that name that is
// not the pool's exists.
const EventDiskNameTaken = "DiskNameTaken"

// referenced is the set of disks the pool's replicas name, Terminating ones included.
func (s *scope) referenced() map[string]bool {
	out := map[string]bool{}
	for _, vm := range s.vms {
		for _, ref := range vm.Spec.BlockDeviceRefs {
			if ref.Kind == v1alpha2.DiskDevice {
				out[ref.Name] = true
			}
		}
	}
	return out
}

// freeSince is when a free Retain disk was freed; one not yet marked counts as freed now.
func freeSince(d *v1alpha2.VirtualDisk, now time.Time) time.Time {
	if t, err := time.Parse(time.RFC3339, d.Annotations[v1alpha2.AnnotationPoolDiskFreeSince]); err == nil {
		return t
	}
	return now
}

// freeDisks are the pool's free Retain disks of a template, most recently freed first.
func (s *scope) freeDisks(template string, now time.Time) []*v1alpha2.VirtualDisk {
	used := s.referenced()
	var out []*v1alpha2.VirtualDisk
	for i := range s.disks {
		d := &s.disks[i]
		if d.DeletionTimestamp.IsZero() && isControlledBy(d, s.pool.UID) && d.Labels[v1alpha2.LabelPoolDiskTemplate] == template && !used[d.Name] {
			out = append(out, d)
		}
	}
	slices.SortStableFunc(out, func(a, b *v1alpha2.VirtualDisk) int {
		return freeSince(b, now).Compare(freeSince(a, now))
	})
	return out
}

// takeRetainDisks picks a new replica's Retain disks, by template: the most recently
// freed disk of the template, or a new name.
func (s *scope) takeRetainDisks(now time.Time) map[string]string {
	out := map[string]string{}
	for _, t := range s.pool.Spec.VirtualDiskTemplates {
		if t.Reclaim.OnScaleDown != v1alpha2.ReclaimRetain {
			continue
		}
		if free := s.freeDisks(t.Name, now); len(free) > 0 {
			out[t.Name] = free[0].Name
		} else {
			out[t.Name] = retainDiskName(s.pool.Name, t.Name)
		}
	}
	return out
}

// ensureDisks makes the disks the live replicas name and lack: a replica's own disk
// controlled by its VM, a Retain disk by the pool.
func (r *Reconciler) ensureDisks(ctx context.Context, s *scope) error {
	have := map[string]bool{}
	for _, d := range s.disks {
		have[d.Name] = true
	}
	for i := range s.vms {
		vm := &s.vms[i]
		if !vm.DeletionTimestamp.IsZero() {
			continue
		}
		for _, ref := range vm.Spec.BlockDeviceRefs {
			if ref.Kind != v1alpha2.DiskDevice || have[ref.Name] {
				continue
			}
			t, owner := s.diskTemplate(vm, ref.Name)
			if t == nil {
				continue // its template was removed from the pool
			}
			d := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: s.pool.Namespace, Labels: map[string]string{
				v1alpha2.LabelPool: s.pool.Name, v1alpha2.LabelPoolUID: string(s.pool.UID), v1alpha2.LabelPoolDiskTemplate: t.Name,
			}}}
			d.Spec.DataSource = t.Spec.DataSource.DeepCopy()
			t.Spec.PersistentVolumeClaim.DeepCopyInto(&d.Spec.PersistentVolumeClaim)
			if err := controllerutil.SetControllerReference(owner, d, r.Client.Scheme()); err != nil {
				return err
			}
			switch err := r.Client.Create(ctx, d); {
			case apierrors.IsAlreadyExists(err):
				r.Recorder.Eventf(s.pool, corev1.EventTypeWarning, EventDiskNameTaken,
					"Replica %s needs disk %s, and a VirtualDisk of that name that is not the pool's exists: delete or rename it", vm.Name, ref.Name)
			case err != nil:
				return fmt.Errorf("making disk %s of replica %s: %w", ref.Name, vm.Name, err)
			default:
				ctrl.LoggerFrom(ctx).Info("Created a replica's disk", "vm", vm.Name, "disk", d.Name)
				have[d.Name] = true
			}
		}
	}
	return nil
}

// diskTemplate finds the template of a disk a replica names, by the disk's name, and the
// disk's owner: the VM for <replica>-<template>, the pool for <pool>-<template>-<random>.
func (s *scope) diskTemplate(vm *v1alpha2.VirtualMachine, disk string) (*v1alpha2.VirtualDiskTemplate, client.Object) {
	for i := range s.pool.Spec.VirtualDiskTemplates {
		t := &s.pool.Spec.VirtualDiskTemplates[i]
		if disk == deleteDiskName(vm.Name, t.Name) {
			return t, vm
		}
		if retainName(s.pool.Name, t.Name).MatchString(disk) {
			return t, s.pool
		}
	}
	return nil, nil
}

func retainName(pool, template string) *regexp.Regexp {
	return regexp.MustCompile("^" + regexp.QuoteMeta(pool+"-"+template+"-") + "[0-9a-f]{6}$")
}

// releaseDisks deletes the disks of replicas that are gone, marks the Retain disks no
// replica names as free (and those taken again as not), and collects free Retain disks
// past their ttl beyond the template's keep.
func (r *Reconciler) releaseDisks(ctx context.Context, s *scope) error {
	now := r.now()
	used := s.referenced()
	vmUIDs := map[types.UID]bool{}
	for _, vm := range s.vms {
		vmUIDs[vm.UID] = true
	}
	free := map[string][]*v1alpha2.VirtualDisk{}
	for i := range s.disks {
		d := &s.disks[i]
		if !d.DeletionTimestamp.IsZero() {
			continue
		}
		owner := metav1.GetControllerOf(d)
		switch {
		case owner == nil:
			continue
		case owner.Kind == "VirtualMachine" && !vmUIDs[owner.UID]:
			// A replica's own disk whose replica is gone (what the garbage collector does too).
			if err := r.deleteDisk(ctx, s, d, "its replica "+owner.Name+" is gone"); err != nil {
				return err
			}
		case owner.UID == s.pool.UID:
			if err := r.markFree(ctx, d, !used[d.Name], now); err != nil {
				return err
			}
			if !used[d.Name] {
				t := d.Labels[v1alpha2.LabelPoolDiskTemplate]
				free[t] = append(free[t], d)
			}
		}
	}
	for name, disks := range free {
		if err := r.collect(ctx, s, name, disks, now); err != nil {
			return err
		}
	}
	return nil
}

// markFree sets or clears a Retain disk's free-since annotation.
func (r *Reconciler) markFree(ctx context.Context, d *v1alpha2.VirtualDisk, free bool, now time.Time) error {
	_, marked := d.Annotations[v1alpha2.AnnotationPoolDiskFreeSince]
	if free == marked {
		return nil
	}
	orig := d.DeepCopy()
	if free {
		if d.Annotations == nil {
			d.Annotations = map[string]string{}
		}
		d.Annotations[v1alpha2.AnnotationPoolDiskFreeSince] = now.UTC().Format(time.RFC3339)
	} else {
		delete(d.Annotations, v1alpha2.AnnotationPoolDiskFreeSince)
	}
	return client.IgnoreNotFound(r.Client.Patch(ctx, d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})))
}

// collect deletes a template's free disks that are past their ttl, keeping the keep most
// recently freed; a template removed from the pool, or now Delete, keeps none.
func (r *Reconciler) collect(ctx context.Context, s *scope, template string, free []*v1alpha2.VirtualDisk, now time.Time) error {
	i := slices.IndexFunc(s.pool.Spec.VirtualDiskTemplates, func(t v1alpha2.VirtualDiskTemplate) bool { return t.Name == template })
	keep, ttl := 0, time.Duration(0)
	if i >= 0 {
		rc := s.pool.Spec.VirtualDiskTemplates[i].Reclaim
		if rc.OnScaleDown == v1alpha2.ReclaimRetain {
			if rc.TTL == nil {
				return nil // kept for good
			}
			keep, ttl = int(rc.Keep), rc.TTL.Duration
		}
	}
	slices.SortStableFunc(free, func(a, b *v1alpha2.VirtualDisk) int {
		return freeSince(b, now).Compare(freeSince(a, now))
	})
	for _, d := range free[min(keep, len(free)):] {
		age := now.Sub(freeSince(d, now))
		if age < ttl {
			if left := ttl - age; s.recheck == 0 || left < s.recheck {
				s.recheck = left
			}
			continue
		}
		why := fmt.Sprintf("free for %s, beyond keep %d and ttl %s", age.Round(time.Second), keep, ttl)
		if i < 0 {
			why = "its template " + template + " was removed from the pool"
		} else if ttl == 0 {
			why = "its template " + template + " is now reclaim Delete"
		}
		if err := r.deleteDisk(ctx, s, d, why); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reconciler) deleteDisk(ctx context.Context, s *scope, d *v1alpha2.VirtualDisk, why string) error {
	if err := r.Client.Delete(ctx, d, client.Preconditions{UID: &d.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting disk %s: %w", d.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Deleted a pool disk", "disk", d.Name, "why", why)
	r.Recorder.Eventf(s.pool, corev1.EventTypeNormal, EventDiskCollected, "Deleted disk %s: %s", d.Name, why)
	return nil
}
