package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
)

// DiskReconciler provisions VirtualDisks as qcow2 files on the shared storage.
type DiskReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Root     string
	// APIReader reads, past the cache, whether Ferry is being uninstalled (package
	// uninstall); nil: never.
	APIReader client.Reader
}

// SetupWithManager registers the controller.
func (r *DiskReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualDisk{}).
		Watches(&v1alpha2.ClusterVirtualImage{}, handler.EnqueueRequestsFromMapFunc(r.disksOfImage)).
		Named("virtualdisk").
		Complete(r)
}

func (r *DiskReconciler) diskPath(d *v1alpha2.VirtualDisk) string {
	return filepath.Join(r.Root, "disks", d.Namespace, fmt.Sprintf("%s-%s.qcow2", d.Name, string(d.UID)[:8]))
}

// Reconcile provisions one disk.
func (r *DiskReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	d := &v1alpha2.VirtualDisk{}
	if err := r.Client.Get(ctx, req.NamespacedName, d); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	path := r.diskPath(d)
	if !d.DeletionTimestamp.IsZero() {
		return r.remove(ctx, d, path)
	}
	if controllerutil.AddFinalizer(d, v1alpha2.FinalizerStorage) {
		if err := r.Client.Update(ctx, d); err != nil {
			return ctrl.Result{}, err
		}
	}
	if d.Status.Phase == v1alpha2.ImageReady && fileExists(path) {
		return ctrl.Result{}, nil
	}
	orig := d.DeepCopy()
	base, baseFormat, reason, err := r.source(ctx, d)
	if err == nil {
		err = r.provision(ctx, d, path, base, baseFormat)
		reason = v1alpha2.ReasonProvisionFailed
	}
	if err != nil {
		d.Status.Phase = v1alpha2.ImagePending
		if reason != v1alpha2.ReasonSourceNotReady {
			d.Status.Phase = v1alpha2.ImageFailed
			r.Recorder.Eventf(d, corev1.EventTypeWarning, reason, "%v", err)
		}
		setReady(&d.Status.Conditions, false, reason, err.Error(), d.Generation)
		return ctrl.Result{RequeueAfter: 30 * time.Second}, r.Client.Status().Patch(ctx, d, client.MergeFrom(orig))
	}
	capacity, err := diskSize(ctx, path)
	if err != nil {
		return ctrl.Result{}, err
	}
	d.Status.Phase = v1alpha2.ImageReady
	d.Status.Path = path
	d.Status.Capacity = humanBytes(capacity)
	d.Status.ObservedGeneration = d.Generation
	setReady(&d.Status.Conditions, true, v1alpha2.ReasonImported, "disk of "+d.Status.Capacity+" provisioned", d.Generation)
	r.Recorder.Eventf(d, corev1.EventTypeNormal, "Provisioned", "Provisioned a disk of %s", d.Status.Capacity)
	return ctrl.Result{}, r.Client.Status().Patch(ctx, d, client.MergeFrom(orig))
}

// source finds the image a disk starts from; it returns a reason for the condition.
func (r *DiskReconciler) source(ctx context.Context, d *v1alpha2.VirtualDisk) (string, string, string, error) {
	ds := d.Spec.DataSource
	if ds == nil {
		return "", "", "", nil
	}
	if ds.Type != v1alpha2.SourceObjectRef {
		return "", "", v1alpha2.ReasonProvisionFailed, fmt.Errorf("a VirtualDisk is made from an image: use dataSource.type ObjectRef with a ClusterVirtualImage")
	}
	var img v1alpha2.ClusterVirtualImage
	if err := r.Client.Get(ctx, client.ObjectKey{Name: ds.ObjectRef.Name}, &img); err != nil {
		return "", "", v1alpha2.ReasonSourceNotReady, fmt.Errorf("ClusterVirtualImage %s: %w", ds.ObjectRef.Name, err)
	}
	switch img.Status.Phase {
	case v1alpha2.ImageReady:
		if img.Status.CDROM || img.Status.Format == FormatISO {
			return "", "", v1alpha2.ReasonProvisionFailed, fmt.Errorf("ClusterVirtualImage %s is an ISO (a CD-ROM), and a VirtualDisk cannot be made from one: "+
				"attach the image to the VM in blockDeviceRefs (kind ClusterVirtualImage) and give the VM an empty VirtualDisk (no dataSource) to install to", img.Name)
		}
		return img.Status.Path, img.Status.Format, "", nil
	case v1alpha2.ImageFailed:
		return "", "", v1alpha2.ReasonImageFailed, fmt.Errorf("ClusterVirtualImage %s failed: %s", img.Name, readyMessage(img.Status.Conditions, "import failed"))
	}
	return "", "", v1alpha2.ReasonSourceNotReady, fmt.Errorf("waiting for ClusterVirtualImage %s to be imported: %s", img.Name, readyMessage(img.Status.Conditions, "not started"))
}

func readyMessage(conds []metav1.Condition, otherwise string) string {
	if c := meta.FindStatusCondition(conds, v1alpha2.ImageConditionReady); c != nil && c.Message != "" {
		return c.Message
	}
	return otherwise
}

func (r *DiskReconciler) provision(ctx context.Context, d *v1alpha2.VirtualDisk, path, base, baseFormat string) error {
	if fileExists(path) {
		return nil
	}
	var size int64
	q := d.Spec.PersistentVolumeClaim.Size
	if q != nil {
		size = q.Value()
	}
	if base != "" {
		// The image was checked at import; it is read again because a disk must never
		// be backed by a file that names another one.
		info, err := inspect(ctx, base)
		if err != nil {
			return fmt.Errorf("the disk's image: %w", err)
		}
		if q != nil && size < info.VirtualSize {
			return fmt.Errorf("persistentVolumeClaim.size %s is smaller than the image (%s): ask for at least %s",
				q.String(), humanBytes(info.VirtualSize), humanBytes(info.VirtualSize))
		}
		size = max(size, info.VirtualSize)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := createOverlay(ctx, tmp, base, baseFormat, size); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// remove deletes the disk's file once no VM holds the disk. While Ferry is being
// uninstalled (the disks' CRD is being deleted) it keeps the file.
func (r *DiskReconciler) remove(ctx context.Context, d *v1alpha2.VirtualDisk, path string) (ctrl.Result, error) {
	if uninstall.Terminating(ctx, r.APIReader, uninstall.CRDDisks) {
		ctrl.LoggerFrom(ctx).Info("The VirtualDisk CRD is being deleted: releasing the disk, its file is kept", "path", path)
		return ctrl.Result{}, uninstall.Release(ctx, r.Client, d)
	}
	if len(d.Status.AttachedToVirtualMachines) > 0 {
		orig := d.DeepCopy()
		d.Status.Phase = v1alpha2.ImageTerminating
		setReady(&d.Status.Conditions, false, v1alpha2.ReasonDiskInUse,
			"the disk is deleted once VM "+d.Status.AttachedToVirtualMachines[0].Name+" no longer uses it", d.Generation)
		return ctrl.Result{}, r.Client.Status().Patch(ctx, d, client.MergeFrom(orig))
	}
	// The disk lease (and its lock) of the VMs that used the disk go with it.
	for _, f := range []string{path, path + ".lease", path + ".lease.lock"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return ctrl.Result{}, err
		}
	}
	controllerutil.RemoveFinalizer(d, v1alpha2.FinalizerStorage)
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, d))
}

// disksOfImage wakes disks made from an image when the image changes.
func (r *DiskReconciler) disksOfImage(ctx context.Context, obj client.Object) []reconcile.Request {
	var disks v1alpha2.VirtualDiskList
	if err := r.Client.List(ctx, &disks); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, d := range disks.Items {
		if ds := d.Spec.DataSource; ds != nil && ds.ObjectRef != nil && ds.ObjectRef.Name == obj.GetName() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&d)})
		}
	}
	return out
}
