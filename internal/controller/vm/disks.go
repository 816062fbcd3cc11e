package vm

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/storage"
)

// ensureDisks resolves the VM's block devices to files and takes the VM's hold on each
// disk (a disk serves one VM at a time). It records in s why the VM cannot start yet.
// Every file a launcher is given is derived from the storage directory and the object's
// identity (imageFile, diskFile), never read from a status another writer could set.
func (r *Reconciler) ensureDisks(ctx context.Context, s *scope) error {
	vm := s.vm
	s.disks = s.disks[:0]
	for _, ref := range vm.Spec.BlockDeviceRefs {
		switch ref.Kind {
		case v1alpha2.ClusterImageDevice, v1alpha2.ImageDevice:
			img, st := imageOf(ref.Kind)
			key := client.ObjectKey{Name: ref.Name}
			if ref.Kind == v1alpha2.ImageDevice {
				// A VM attaches the VirtualImages of its own namespace only.
				key.Namespace = vm.Namespace
			}
			if err := r.Client.Get(ctx, key, img); err != nil {
				if apierrors.IsNotFound(err) {
					return s.diskProblem(v1alpha2.ReasonDiskNotFound, "%s %s does not exist", ref.Kind, ref.Name)
				}
				return err
			}
			if st.Phase != v1alpha2.ImageReady {
				return s.diskProblem(imageReason(st.Phase), "%s %s is %s%s", ref.Kind, ref.Name, phaseOr(st.Phase), readyMessage(st.Conditions))
			}
			d, problem := imageFile(r.Node.StorageDir, img, st)
			if problem != "" {
				return r.refuseDisk(s, problem)
			}
			s.disks = append(s.disks, d)
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
			// Checked before the VM takes its hold: a refused disk is not held.
			file, problem := diskFile(r.Node.StorageDir, &d)
			if problem != "" {
				return r.refuseDisk(s, problem)
			}
			if holder := diskHolder(&d); holder != "" && holder != vm.Name {
				return s.diskProblem(v1alpha2.ReasonDiskInUse, "VirtualDisk %s is attached to VM %s; a disk serves one VM at a time", ref.Name, holder)
			}
			if diskHolder(&d) == "" {
				orig := d.DeepCopy()
				d.Status.AttachedToVirtualMachines = []v1alpha2.AttachedVirtualMachine{{Name: vm.Name, Mounted: true}}
				// The optimistic lock makes two VMs racing for one disk see a conflict.
				if err := r.Client.Status().Patch(ctx, &d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
					return fmt.Errorf("attaching VirtualDisk %s: %w", ref.Name, err)
				}
				r.Recorder.Eventf(vm, "Normal", "DiskAttached", "Attached VirtualDisk %s", ref.Name)
			}
			s.disks = append(s.disks, file)
		}
	}
	withBootOrder(vm, s.disks)
	s.disksReady = true
	s.diskReason, s.diskMessage = v1alpha2.ReasonDisksReady, fmt.Sprintf("%d block device(s) ready", len(s.disks))
	return nil
}

// imageOf is an empty image of a block device kind, and its status.
func imageOf(kind v1alpha2.BlockDeviceKind) (client.Object, *v1alpha2.ImageStatus) {
	if kind == v1alpha2.ImageDevice {
		vi := &v1alpha2.VirtualImage{}
		return vi, &vi.Status.ImageStatus
	}
	cvi := &v1alpha2.ClusterVirtualImage{}
	return cvi, &cvi.Status.ImageStatus
}

// imageFile is the file of a Ready image that a launcher is given: the one the storage
// keeps under root for the image's identity (storage.ImagePath, storage.VirtualImagePath),
// attached read-only, so many VMs may boot from it at once, in the format its header
// shows; an ISO is a CD-ROM, whose bytes QEMU reads as raw. Neither status.path nor
// status.format is trusted: whoever may write an image's status could otherwise hand a
// launcher any host file (a node's disk, its keys), or a raw file as qcow2. A status.path
// that names another file than the storage's refuses the image, with why in problem.
func imageFile(root string, img client.Object, st *v1alpha2.ImageStatus) (d attachedDisk, problem string) {
	kind := v1alpha2.ClusterVirtualImageKind
	path := storage.ImagePath(root, img.GetName())
	if vi, ok := img.(*v1alpha2.VirtualImage); ok {
		kind, path = v1alpha2.VirtualImageKind, storage.VirtualImagePath(root, vi)
	}
	if st.Path != "" && st.Path != path {
		return attachedDisk{}, fmt.Sprintf("%s %s is refused: its status.path %q is not the image's file on the storage (%s); "+
			"an image's file is found from its name, and a status naming another file was not written by Ferry's storage controller", kind, img.GetName(), st.Path, path)
	}
	format, err := storage.ImageFormat(path)
	if err != nil {
		return attachedDisk{}, fmt.Sprintf("%s %s is refused: its file: %v", kind, img.GetName(), err)
	}
	if format == storage.FormatISO {
		return attachedDisk{Path: path, Format: storage.FormatRaw + ":ro", CDROM: true}, ""
	}
	return attachedDisk{Path: path, Format: format + ":ro"}, ""
}

// diskFile is the file of a Ready disk that a launcher is given: the one the storage keeps
// under root for the disk's namespace, name and UID (storage.DiskPath), in the format the
// storage makes every disk in. As with imageFile, status.path is never used, and one that
// names another file refuses the disk.
func diskFile(root string, d *v1alpha2.VirtualDisk) (attachedDisk, string) {
	path := storage.DiskPath(root, d)
	if d.Status.Path != "" && d.Status.Path != path {
		return attachedDisk{}, fmt.Sprintf("VirtualDisk %s is refused: its status.path %q is not the disk's file on the storage (%s); "+
			"a disk's file is found from its name and UID, and a status naming another file was not written by Ferry's storage controller", d.Name, d.Status.Path, path)
	}
	return attachedDisk{Path: path, Format: storage.DiskFormat}, ""
}

// refuseDisk records a refused disk or image in s, and says so in a Warning event once
// (not again while the VM's condition already shows it).
func (r *Reconciler) refuseDisk(s *scope, problem string) error {
	if c := meta.FindStatusCondition(s.vm.Status.Conditions, v1alpha2.VMConditionBlockDevicesReady); c == nil || c.Message != problem {
		r.Recorder.Event(s.vm, corev1.EventTypeWarning, v1alpha2.ReasonDiskRefused, problem)
	}
	return s.diskProblem(v1alpha2.ReasonDiskRefused, "%s", problem)
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
		// Locked like the attach: a stale disk read is not written back (finalize redoes it).
		if err := r.Client.Status().Patch(ctx, &d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
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
// is Ready waits for it): any VM for a ClusterVirtualImage, those of its namespace for a
// VirtualImage.
func (r *Reconciler) vmsOfImage(ctx context.Context, obj client.Object) []reconcile.Request {
	kind := v1alpha2.ClusterImageDevice
	opts := []client.ListOption{client.UnsafeDisableDeepCopy}
	if _, ok := obj.(*v1alpha2.VirtualImage); ok {
		kind = v1alpha2.ImageDevice
		opts = append(opts, client.InNamespace(obj.GetNamespace()))
	}
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms, opts...); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range vms.Items {
		for _, ref := range vms.Items[i].Spec.BlockDeviceRefs {
			if ref.Kind == kind && ref.Name == obj.GetName() {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&vms.Items[i])})
			}
		}
	}
	return out
}
