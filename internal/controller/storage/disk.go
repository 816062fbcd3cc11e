package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
	"github.com/ferryvm/ferry/internal/netguard"
)

// DiskReconciler provisions VirtualDisks as qcow2 files on the shared storage.
type DiskReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Root     string
	// APIReader reads, past the cache, whether Ferry is being uninstalled (package
	// uninstall); nil: never.
	APIReader client.Reader
	// MaxImageSize, SourceDirs, Destinations, Uploads, Backoff and ProgressEvery are as the
	// ImageReconciler's, for disks with an HTTP or Upload source.
	MaxImageSize  int64
	SourceDirs    []string
	Destinations  *netguard.Policy
	Uploads       *Uploads
	Backoff       func(failures int32) time.Duration
	ProgressEvery time.Duration
}

// SetupWithManager registers the controller.
func (r *DiskReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualDisk{}).
		Watches(&v1alpha2.ClusterVirtualImage{}, handler.EnqueueRequestsFromMapFunc(r.disksOfImage)).
		Watches(&v1alpha2.VirtualImage{}, handler.EnqueueRequestsFromMapFunc(r.disksOfImage)).
		Watches(&v1alpha2.VirtualDiskSnapshot{}, handler.EnqueueRequestsFromMapFunc(r.disksOfImage)).
		// A resize waits for the disk's VM to stop.
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(r.disksOfVM)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Named("virtualdisk").
		Complete(r)
}

func (r *DiskReconciler) diskPath(d *v1alpha2.VirtualDisk) string {
	return DiskPath(r.Root, d)
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
		return r.resize(ctx, d, path)
	}
	if ds := d.Spec.DataSource; ds != nil && (ds.Type == v1alpha2.SourceHTTP || ds.Type == v1alpha2.SourceUpload || fromSnapshot(ds)) {
		return r.importDisk(ctx, d, path)
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
		return r.writeStatus(ctx, d, orig, ctrl.Result{RequeueAfter: 30 * time.Second})
	}
	capacity, err := diskSize(ctx, path)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.ready(ctx, d, path, capacity, "")
	res, err := r.writeStatus(ctx, d, orig, ctrl.Result{})
	if err == nil && !res.Requeue {
		r.Recorder.Eventf(d, corev1.EventTypeNormal, "Provisioned", "Provisioned a disk of %s", d.Status.Capacity)
	}
	return res, err
}

func (r *DiskReconciler) ready(ctx context.Context, d *v1alpha2.VirtualDisk, path string, capacity int64, note string) {
	d.Status.Phase = v1alpha2.ImageReady
	d.Status.Path = path
	d.Status.Capacity = humanBytes(capacity)
	d.Status.Progress = "100%"
	d.Status.DownloadSpeed, d.Status.ImportRetry, d.Status.ImageUploadURLs = nil, nil, nil
	if ds := d.Spec.DataSource; ds != nil {
		d.Status.SourceUID = sourceUID(ctx, r.Client, d.Namespace, *ds)
	}
	d.Status.ObservedGeneration = d.Generation
	setReady(&d.Status.Conditions, true, v1alpha2.ReasonImported, "disk of "+d.Status.Capacity+" provisioned"+note, d.Generation)
}

// writeStatus writes the disk's status against orig with its resourceVersion. The VM
// controller writes the disk's status too (attachedToVirtualMachines, which remove
// decides on): a disk read before its write is reconciled again from a fresh read, not
// written from the stale copy. res is the result when the write succeeds.
func (r *DiskReconciler) writeStatus(ctx context.Context, d, orig *v1alpha2.VirtualDisk, res ctrl.Result) (ctrl.Result, error) {
	err := r.Client.Status().Patch(ctx, d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	switch {
	case apierrors.IsConflict(err):
		return ctrl.Result{Requeue: true}, nil
	case err != nil:
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return res, nil
}

// source finds the image a disk starts from; it returns a reason for the condition.
func (r *DiskReconciler) source(ctx context.Context, d *v1alpha2.VirtualDisk) (string, string, string, error) {
	ds := d.Spec.DataSource
	if ds == nil {
		return "", "", "", nil
	}
	if ds.Type != v1alpha2.SourceObjectRef || ds.ObjectRef == nil {
		return "", "", v1alpha2.ReasonProvisionFailed, fmt.Errorf("dataSource.type %q is not supported for a VirtualDisk", ds.Type)
	}
	ref := *ds.ObjectRef
	var (
		img  client.Object
		st   *v1alpha2.ImageStatus
		file string
	)
	switch ref.Kind {
	case v1alpha2.ClusterVirtualImageKind:
		cvi := &v1alpha2.ClusterVirtualImage{}
		img, st, file = cvi, &cvi.Status.ImageStatus, ImagePath(r.Root, ref.Name)
	case v1alpha2.VirtualImageKind:
		vi := &v1alpha2.VirtualImage{}
		img, st = vi, &vi.Status.ImageStatus
	default:
		return "", "", v1alpha2.ReasonProvisionFailed, fmt.Errorf("a VirtualDisk is made from a ClusterVirtualImage or a VirtualImage, not a %s", ref.Kind)
	}
	what := ref.Kind + " " + ref.Name
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: refNamespace(d.Namespace, ref), Name: ref.Name}, img); err != nil {
		return "", "", v1alpha2.ReasonSourceNotReady, fmt.Errorf("%s: %w", what, err)
	}
	if vi, ok := img.(*v1alpha2.VirtualImage); ok {
		file = VirtualImagePath(r.Root, vi)
	}
	switch st.Phase {
	case v1alpha2.ImageReady:
		if st.CDROM || st.Format == FormatISO {
			return "", "", v1alpha2.ReasonProvisionFailed, fmt.Errorf("%s is an ISO (a CD-ROM), and a VirtualDisk cannot be made from one: "+
				"attach the image to the VM in blockDeviceRefs (kind %s) and give the VM an empty VirtualDisk (no dataSource) to install to", what, ref.Kind)
		}
		// The file is found from the image's identity under the storage, never from its
		// status.path (see ImagePath).
		return file, st.Format, "", nil
	case v1alpha2.ImageFailed:
		return "", "", v1alpha2.ReasonImageFailed, fmt.Errorf("%s failed: %s", what, readyMessage(st.Conditions, "import failed"))
	}
	return "", "", v1alpha2.ReasonSourceNotReady, fmt.Errorf("waiting for %s to be imported: %s", what, readyMessage(st.Conditions, "not started"))
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
		// The format is the file's, as read now, not what the image's status says.
		if info.Format != FormatQcow2 && info.Format != FormatRaw {
			return fmt.Errorf("the disk's image is %s, not a disk image", info.Format)
		}
		baseFormat = info.Format
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
		return r.writeStatus(ctx, d, orig, ctrl.Result{})
	}
	// The disk lease (and its lock) of the VMs that used the disk go with it.
	for _, f := range []string{path, path + ".lease", path + ".lease.lock"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return ctrl.Result{}, err
		}
	}
	removeUpload(r.Root, d)
	controllerutil.RemoveFinalizer(d, v1alpha2.FinalizerStorage)
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, d))
}

// disksOfImage wakes disks made from an image (or a snapshot) when it changes.
func (r *DiskReconciler) disksOfImage(ctx context.Context, obj client.Object) []reconcile.Request {
	var disks v1alpha2.VirtualDiskList
	kind := v1alpha2.ClusterVirtualImageKind
	var opts []client.ListOption
	switch obj.(type) {
	case *v1alpha2.VirtualImage:
		kind = v1alpha2.VirtualImageKind
		opts = append(opts, client.InNamespace(obj.GetNamespace()))
	case *v1alpha2.VirtualDiskSnapshot:
		kind = v1alpha2.VirtualDiskSnapshotKind
		opts = append(opts, client.InNamespace(obj.GetNamespace()))
	}
	if err := r.Client.List(ctx, &disks, opts...); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, d := range disks.Items {
		if ref := diskImageRef(&d); ref != nil && ref.Kind == kind && ref.Name == obj.GetName() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&d)})
		}
	}
	return out
}

// disksOfVM wakes the disks of a stopped VM: a resize waits for that.
func (r *DiskReconciler) disksOfVM(_ context.Context, obj client.Object) []reconcile.Request {
	vm, ok := obj.(*v1alpha2.VirtualMachine)
	if !ok || vm.Status.Phase != v1alpha2.MachineStopped {
		return nil
	}
	var out []reconcile.Request
	for _, ref := range vm.Spec.BlockDeviceRefs {
		if ref.Kind == v1alpha2.DiskDevice {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: vm.Namespace, Name: ref.Name}})
		}
	}
	return out
}

// fromSnapshot tells whether a disk is restored from a VirtualDiskSnapshot: its file is
// imported, as an HTTP source's is, from the snapshot's (a disk never reads a snapshot's
// file once made, so the snapshot can go).
func fromSnapshot(ds *v1alpha2.DataSource) bool {
	return ds.Type == v1alpha2.SourceObjectRef && ds.ObjectRef != nil && ds.ObjectRef.Kind == v1alpha2.VirtualDiskSnapshotKind
}
