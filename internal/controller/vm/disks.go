package vm

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// ensureDisks resolves the VM's block devices to files and takes the VM's hold on each
// disk (a disk serves one VM at a time). It records in s why the VM cannot start yet.
func (r *Reconciler) ensureDisks(ctx context.Context, s *scope) error {
	vm := s.vm
	s.disks = s.disks[:0]
	for _, ref := range vm.Spec.BlockDeviceRefs {
		switch ref.Kind {
		case v1alpha2.ClusterImageDevice:
			var img v1alpha2.ClusterVirtualImage
			if err := r.Client.Get(ctx, client.ObjectKey{Name: ref.Name}, &img); err != nil {
				if apierrors.IsNotFound(err) {
					return s.diskProblem(v1alpha2.ReasonDiskNotFound, "ClusterVirtualImage %s does not exist", ref.Name)
				}
				return err
			}
			if img.Status.Phase != v1alpha2.ImageReady {
				return s.diskProblem(imageReason(img.Status.Phase), "ClusterVirtualImage %s is %s%s", ref.Name, phaseOr(img.Status.Phase), readyMessage(img.Status.Conditions))
			}
			// An image is attached read-only, so many VMs may boot from it at once. An ISO
			// is a CD-ROM, whose bytes QEMU reads as raw.
			if img.Status.CDROM || img.Status.Format == "iso" {
				s.disks = append(s.disks, attachedDisk{Path: img.Status.Path, Format: "raw:ro", CDROM: true})
				continue
			}
			s.disks = append(s.disks, attachedDisk{Path: img.Status.Path, Format: img.Status.Format + ":ro"})
		default:
			var d v1alpha2.VirtualDisk
			if err := r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: ref.Name}, &d); err != nil {
				if apierrors.IsNotFound(err) {
					return s.diskProblem(v1alpha2.ReasonDiskNotFound, "VirtualDisk %s does not exist", ref.Name)
				}
				return err
			}
			if d.Status.Phase != v1alpha2.ImageReady {
				return s.diskProblem(imageReason(d.Status.Phase), "VirtualDisk %s is %s%s", ref.Name, phaseOr(d.Status.Phase), readyMessage(d.Status.Conditions))
			}
			if holder := diskHolder(&d); holder != "" && holder != vm.Name {
				return s.diskProblem(v1alpha2.ReasonDiskInUse, "VirtualDisk %s is attached to VM %s; a disk serves one VM at a time", ref.Name, holder)
			}
			if diskHolder(&d) == "" {
				orig := d.DeepCopy()
				d.Status.AttachedToVirtualMachines = []v1alpha2.AttachedVirtualMachine{{Name: vm.Name}}
				// The optimistic lock makes two VMs racing for one disk see a conflict.
				if err := r.Client.Status().Patch(ctx, &d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
					return fmt.Errorf("attaching VirtualDisk %s: %w", ref.Name, err)
				}
				r.Recorder.Eventf(vm, "Normal", "DiskAttached", "Attached VirtualDisk %s", ref.Name)
			}
			s.disks = append(s.disks, attachedDisk{Path: d.Status.Path, Format: "qcow2"})
		}
	}
	s.disksReady = true
	s.diskReason, s.diskMessage = v1alpha2.ReasonDisksReady, fmt.Sprintf("%d block device(s) ready", len(s.disks))
	return nil
}

func (s *scope) diskProblem(reason, format string, args ...any) error {
	s.disksReady = false
	s.diskReason, s.diskMessage = reason, fmt.Sprintf(format, args...)
	return nil
}

func imageReason(p v1alpha2.ImagePhase) string {
	if p == v1alpha2.ImageFailed {
		return v1alpha2.ReasonImageFailed
	}
	return v1alpha2.ReasonDiskNotReady
}

func phaseOr(p v1alpha2.ImagePhase) string {
	if p == "" {
		return string(v1alpha2.ImagePending)
	}
	return string(p)
}

func readyMessage(conds []metav1.Condition) string {
	for _, c := range conds {
		if c.Type == v1alpha2.ImageConditionReady && c.Message != "" {
			return ": " + c.Message
		}
	}
	return ""
}

func diskHolder(d *v1alpha2.VirtualDisk) string {
	if len(d.Status.AttachedToVirtualMachines) == 0 {
		return ""
	}
	return d.Status.AttachedToVirtualMachines[0].Name
}

// detachDisks gives up the VM's hold on its disks.
func (r *Reconciler) detachDisks(ctx context.Context, vm *v1alpha2.VirtualMachine) error {
	for _, ref := range vm.Spec.BlockDeviceRefs {
		if ref.Kind != v1alpha2.DiskDevice {
			continue
		}
		var d v1alpha2.VirtualDisk
		if err := r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: ref.Name}, &d); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return err
		}
		if diskHolder(&d) != vm.Name {
			continue
		}
		orig := d.DeepCopy()
		d.Status.AttachedToVirtualMachines = slices.DeleteFunc(d.Status.AttachedToVirtualMachines, func(a v1alpha2.AttachedVirtualMachine) bool { return a.Name == vm.Name })
		if err := r.Client.Status().Patch(ctx, &d, client.MergeFrom(orig)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("detaching VirtualDisk %s: %w", ref.Name, err)
		}
	}
	return nil
}

// vmsOfDisk wakes the VMs that name a disk when the disk changes.
func (r *Reconciler) vmsOfDisk(ctx context.Context, obj client.Object) []reconcile.Request {
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, vm := range vms.Items {
		for _, ref := range vm.Spec.BlockDeviceRefs {
			if ref.Kind == v1alpha2.DiskDevice && ref.Name == obj.GetName() {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vm)})
			}
		}
	}
	return out
}

// vmsOfImage wakes the VMs that boot the image directly (a VM created before its image
// is Ready waits for it).
func (r *Reconciler) vmsOfImage(ctx context.Context, obj client.Object) []reconcile.Request {
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range vms.Items {
		for _, ref := range vms.Items[i].Spec.BlockDeviceRefs {
			if ref.Kind == v1alpha2.ClusterImageDevice && ref.Name == obj.GetName() {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vms.Items[i])})
			}
		}
	}
	return out
}
