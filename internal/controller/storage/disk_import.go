package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// importDisk fills a disk whose source is HTTP, Upload or a VirtualDiskSnapshot: the bytes are imported and
// checked as an image's are (importer), then converted into the disk's own qcow2 file,
// which names no other file, and grown to persistentVolumeClaim.size.
func (r *DiskReconciler) importDisk(ctx context.Context, d *v1alpha2.VirtualDisk, path string) (ctrl.Result, error) {
	out := importOutcome{recorder: r.Recorder, backoff: r.Backoff, uploads: r.Uploads, root: r.Root}
	im := importer{client: r.Client, apiReader: r.APIReader, root: r.Root, sourceDirs: r.SourceDirs, maxSize: r.MaxImageSize, every: r.ProgressEvery, guard: r.Destinations}
	ds := *d.Spec.DataSource
	write := func(tmp string, info imageInfo) error { return r.writeDisk(ctx, d, tmp, info, path) }
	ready := func(info imageInfo) error {
		capacity, err := diskSize(ctx, path)
		if err != nil {
			return err
		}
		r.ready(ctx, d, path, capacity, fmt.Sprintf(" from a %s image", info.Format)+streebogNote(ds.Checksum()))
		r.Recorder.Eventf(d, corev1.EventTypeNormal, "Provisioned", "Provisioned a disk of %s from a %s image", d.Status.Capacity, info.Format)
		return nil
	}
	return out.run(ctx, im, newStatusWriter(r.Client, d), ds, filepath.Dir(path), importTempPattern(filepath.Base(path)), "disk's image", write, ready)
}

// writeDisk converts a checked image file into the disk's file: a standalone qcow2 of
// persistentVolumeClaim.size (the image's size when that is not given).
func (r *DiskReconciler) writeDisk(ctx context.Context, d *v1alpha2.VirtualDisk, image string, info imageInfo, path string) error {
	if info.Format != FormatQcow2 && info.Format != FormatRaw {
		return permanent("the image is %s, not a disk image: an ISO is attached to a VM as an image (a VirtualImage or ClusterVirtualImage in blockDeviceRefs), and the VM installs to an empty VirtualDisk", info.Format)
	}
	size := info.VirtualSize
	if q := d.Spec.PersistentVolumeClaim.Size; q != nil {
		if q.Value() < info.VirtualSize {
			return permanent("persistentVolumeClaim.size %s is smaller than the image (%s): ask for at least %s", q.String(), humanBytes(info.VirtualSize), humanBytes(info.VirtualSize))
		}
		size = q.Value()
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	defer os.Remove(tmp)
	if _, err := run(ctx, "qemu-img", "convert", "-q", "-f", info.Format, "-O", DiskFormat, "-o", "cluster_size=65536", image, tmp); err != nil {
		return fmt.Errorf("writing the disk: %w", err)
	}
	if size > info.VirtualSize {
		if _, err := run(ctx, "qemu-img", "resize", "-q", "-f", DiskFormat, tmp, fmt.Sprint(size)); err != nil {
			return fmt.Errorf("growing the disk: %w", err)
		}
	}
	return os.Rename(tmp, path)
}

// resize grows a Ready disk's file to a larger persistentVolumeClaim.size. A disk a VM
// runs from is grown once the VM stops (Ferry resizes a file only while no QEMU has it
// open; the Resizing condition says so meanwhile); a smaller size is refused (the CRD's
// rule refuses the edit, and this says so if one got through).
func (r *DiskReconciler) resize(ctx context.Context, d *v1alpha2.VirtualDisk, path string) (ctrl.Result, error) {
	q := d.Spec.PersistentVolumeClaim.Size
	if q == nil {
		return ctrl.Result{}, nil
	}
	// The common case, a disk at its size, costs no qemu-img.
	c := meta.FindStatusCondition(d.Status.Conditions, v1alpha2.DiskConditionResizing)
	// qemu-img rounds a size up to whole 512-byte sectors.
	want := (q.Value() + 511) / 512 * 512
	if cur, err := resource.ParseQuantity(d.Status.Capacity); err == nil && cur.Value() == want && (c == nil || c.Status == metav1.ConditionFalse) {
		return ctrl.Result{}, nil
	}
	capacity, err := diskSize(ctx, path)
	if err != nil {
		return ctrl.Result{}, err
	}
	orig := d.DeepCopy()
	set := func(status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&d.Status.Conditions, metav1.Condition{Type: v1alpha2.DiskConditionResizing, Status: status, Reason: reason, Message: msg, ObservedGeneration: d.Generation})
	}
	switch {
	case want == capacity:
		if c == nil || c.Status == metav1.ConditionFalse {
			return ctrl.Result{}, nil
		}
		set(metav1.ConditionFalse, v1alpha2.ReasonResized, "the disk is "+humanBytes(capacity))
		return r.writeStatus(ctx, d, orig, ctrl.Result{})
	case want < capacity:
		set(metav1.ConditionFalse, v1alpha2.ReasonResizeRefused, fmt.Sprintf("persistentVolumeClaim.size %s is below the disk's %s: a disk only grows", q.String(), humanBytes(capacity)))
		return r.writeStatus(ctx, d, orig, ctrl.Result{})
	}
	if vm := diskHolder(d); vm != "" {
		running, err := vmRuns(ctx, r.Client, d.Namespace, vm)
		if err != nil {
			return ctrl.Result{}, err
		}
		if running {
			set(metav1.ConditionTrue, v1alpha2.ReasonResizeInProgress, fmt.Sprintf("the disk grows from %s to %s when VM %s stops: Ferry grows a disk's file while no VM runs from it (the guest sees the new size at its next start)", humanBytes(capacity), q.String(), vm))
			return r.writeStatus(ctx, d, orig, ctrl.Result{})
		}
	}
	if _, err := run(ctx, "qemu-img", "resize", "-q", "-f", DiskFormat, path, fmt.Sprint(want)); err != nil {
		set(metav1.ConditionTrue, v1alpha2.ReasonResizeInProgress, fmt.Sprintf("growing the disk to %s: %v; trying again", q.String(), err))
		res, werr := r.writeStatus(ctx, d, orig, ctrl.Result{RequeueAfter: 30 * time.Second})
		if werr != nil {
			return res, werr
		}
		return res, nil
	}
	if capacity, err = diskSize(ctx, path); err != nil {
		return ctrl.Result{}, err
	}
	from := d.Status.Capacity
	d.Status.Capacity = humanBytes(capacity)
	set(metav1.ConditionFalse, v1alpha2.ReasonResized, fmt.Sprintf("the disk grew from %s to %s", from, d.Status.Capacity))
	setReady(&d.Status.Conditions, true, v1alpha2.ReasonImported, "disk of "+d.Status.Capacity+" provisioned", d.Generation)
	d.Status.ObservedGeneration = d.Generation
	res, err := r.writeStatus(ctx, d, orig, ctrl.Result{})
	if err == nil && !res.Requeue {
		r.Recorder.Eventf(d, corev1.EventTypeNormal, v1alpha2.ReasonResized, "Grew the disk from %s to %s", from, d.Status.Capacity)
	}
	return res, err
}

// vmRuns tells whether the VM that holds a disk may have it open: it exists and is not
// Stopped.
func vmRuns(ctx context.Context, c client.Client, ns, name string) (bool, error) {
	var vm v1alpha2.VirtualMachine
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &vm); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	return vm.Status.Phase != v1alpha2.MachineStopped, nil
}

func diskHolder(d *v1alpha2.VirtualDisk) string {
	if len(d.Status.AttachedToVirtualMachines) == 0 {
		return ""
	}
	return d.Status.AttachedToVirtualMachines[0].Name
}
