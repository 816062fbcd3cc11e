package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
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

// ImageReconciler imports ClusterVirtualImages, or VirtualImages (Namespaced), into the
// shared storage.
type ImageReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Root is the shared storage directory.
	Root string
	// Namespaced makes the reconciler one of VirtualImages; else of ClusterVirtualImages.
	Namespaced bool
	// APIReader reads, past the cache, whether Ferry is being uninstalled (package
	// uninstall); nil: never.
	APIReader client.Reader
	// MaxImageSize caps the bytes one import may fetch (0: DefaultMaxImageSize).
	MaxImageSize int64
	// SourceDirs are the only directories file:// URLs may read from (none: file:// is
	// refused); see openSourceFile.
	SourceDirs []string
	// Destinations are the addresses HTTP and registry sources may connect to (nil:
	// netguard.Default(), which keeps imports off loopback and link-local addresses).
	Destinations *netguard.Policy
	// Uploads gives images with an Upload source their URLs (nil: they wait with none).
	Uploads *Uploads
	// Backoff is the wait after a number of failed downloads (nil: backoff); tests
	// shorten it.
	Backoff func(failures int32) time.Duration
	// ProgressEvery is how often status.progress is written during a download (0: 3 s).
	ProgressEvery time.Duration
}

// imageObject is a ClusterVirtualImage or a VirtualImage.
type imageObject interface {
	importable
	ImageSource() *v1alpha2.DataSource
	ImageState() *v1alpha2.ImageStatus
}

func (r *ImageReconciler) newImage() imageObject {
	if r.Namespaced {
		return &v1alpha2.VirtualImage{}
	}
	return &v1alpha2.ClusterVirtualImage{}
}

func (r *ImageReconciler) kind() string {
	if r.Namespaced {
		return v1alpha2.VirtualImageKind
	}
	return v1alpha2.ClusterVirtualImageKind
}

// SetupWithManager registers the controller.
func (r *ImageReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(r.newImage()).
		// A deleted image waits for the disks made from it (see keptForDisks).
		Watches(&v1alpha2.VirtualDisk{}, handler.EnqueueRequestsFromMapFunc(r.imageOfDisk)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Named(strings.ToLower(r.kind())).
		Complete(r)
}

func (r *ImageReconciler) importer() importer {
	return importer{client: r.Client, apiReader: r.APIReader, root: r.Root, sourceDirs: r.SourceDirs, maxSize: r.MaxImageSize, every: r.ProgressEvery, guard: r.Destinations}
}

// errGone stops a download whose image was deleted meanwhile.
var errGone = errors.New("the image was deleted during its import")

// Reconcile imports one image.
func (r *ImageReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	img := r.newImage()
	if err := r.Client.Get(ctx, req.NamespacedName, img); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	path := imageFile(r.Root, img)
	if !img.GetDeletionTimestamp().IsZero() {
		return r.remove(ctx, img, path)
	}
	if controllerutil.AddFinalizer(img, v1alpha2.FinalizerStorage) {
		if err := r.Client.Update(ctx, img); err != nil {
			return ctrl.Result{}, err
		}
	}
	st := img.ImageState()
	if st.Phase == v1alpha2.ImageReady && fileExists(path) {
		return ctrl.Result{}, nil
	}
	out := importOutcome{recorder: r.Recorder, backoff: r.Backoff, uploads: r.Uploads, root: r.Root}
	rename := func(tmp string, _ imageInfo) error { return os.Rename(tmp, path) }
	ready := func(info imageInfo) error { r.ready(ctx, img, info); return nil }
	return out.run(ctx, r.importer(), newStatusWriter(r.Client, img), *img.ImageSource(), filepath.Dir(path), importTempPattern(filepath.Base(path)), "image", rename, ready)
}

func (r *ImageReconciler) ready(ctx context.Context, img imageObject, info imageInfo) {
	st := img.ImageState()
	st.Phase = v1alpha2.ImageReady
	st.Format = info.Format
	st.CDROM = info.Format == FormatISO
	st.Path = imageFile(r.Root, img)
	st.Progress = "100%"
	st.ImportRetry, st.ImageUploadURLs = nil, nil
	st.SourceUID = sourceUID(ctx, r.Client, img.GetNamespace(), *img.ImageSource())
	st.Size = v1alpha2.ImageSize{
		Stored: humanBytes(info.ActualSize), StoredBytes: strconv.FormatInt(info.ActualSize, 10),
		Unpacked: humanBytes(info.VirtualSize), UnpackedBytes: strconv.FormatInt(info.VirtualSize, 10),
	}
	st.ObservedGeneration = img.GetGeneration()
	msg := fmt.Sprintf("%s image, %s", info.Format, humanBytes(info.VirtualSize)) + streebogNote(img.ImageSource().Checksum())
	setReady(&st.Conditions, true, v1alpha2.ReasonImported, msg, img.GetGeneration())
	if vi, ok := img.(*v1alpha2.VirtualImage); ok {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha2.ImageConditionStorageReady, Status: metav1.ConditionTrue,
			Reason: v1alpha2.ReasonStoredAsFile, ObservedGeneration: img.GetGeneration(),
			Message: fmt.Sprintf("spec.storage %s: Ferry keeps every image as a file on its shared storage directory (%s), not in a registry or a PVC", vi.Spec.Storage, st.Path)})
	}
	r.Recorder.Eventf(img, corev1.EventTypeNormal, v1alpha2.ReasonImported, "Imported %s image of %s", info.Format, humanBytes(info.VirtualSize))
}

// remove deletes the image's file once no disk made from it is left (a disk is a qcow2
// overlay that reads its image's file). While Ferry is being uninstalled it keeps the
// file.
func (r *ImageReconciler) remove(ctx context.Context, img imageObject, path string) (ctrl.Result, error) {
	crd := uninstall.CRDImages
	if r.Namespaced {
		crd = uninstall.CRDVirtualImages
	}
	if controllerutil.ContainsFinalizer(img, v1alpha2.FinalizerStorage) && uninstall.Terminating(ctx, r.APIReader, crd) {
		ctrl.LoggerFrom(ctx).Info("The "+r.kind()+" CRD is being deleted: releasing the image, its file is kept", "path", path)
		return ctrl.Result{}, uninstall.Release(ctx, r.Client, img)
	}
	disks, err := r.disksOf(ctx, img)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(disks) > 0 {
		w := newStatusWriter(r.Client, img)
		st := img.ImportState()
		st.Phase = v1alpha2.ImageTerminating
		setReady(&st.Conditions, false, v1alpha2.ReasonImageInUse, fmt.Sprintf("the image's file is removed once no VirtualDisk made from it is left: %s", strings.Join(disks, ", ")), img.GetGeneration())
		if !w.changed() {
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, w.patch(ctx)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return ctrl.Result{}, err
	}
	removeUpload(r.Root, img)
	controllerutil.RemoveFinalizer(img, v1alpha2.FinalizerStorage)
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, img))
}

// disksOf names the disks made from the image (namespace/name).
func (r *ImageReconciler) disksOf(ctx context.Context, img client.Object) ([]string, error) {
	var disks v1alpha2.VirtualDiskList
	if err := r.Client.List(ctx, &disks, client.InNamespace(img.GetNamespace())); err != nil {
		return nil, err
	}
	var out []string
	for _, d := range disks.Items {
		if ref := diskImageRef(&d); ref != nil && ref.Kind == r.kind() && ref.Name == img.GetName() {
			out = append(out, d.Namespace+"/"+d.Name)
		}
	}
	return out, nil
}

// diskImageRef is the image a disk is an overlay of, if any.
func diskImageRef(d *v1alpha2.VirtualDisk) *v1alpha2.ObjectRefSource {
	ds := d.Spec.DataSource
	if ds == nil || ds.Type != v1alpha2.SourceObjectRef || ds.ObjectRef == nil {
		return nil
	}
	return ds.ObjectRef
}

// imageOfDisk wakes the image a disk was made from (a deleted image waits for its disks).
func (r *ImageReconciler) imageOfDisk(_ context.Context, obj client.Object) []reconcile.Request {
	d, ok := obj.(*v1alpha2.VirtualDisk)
	if !ok {
		return nil
	}
	ref := diskImageRef(d)
	if ref == nil || ref.Kind != r.kind() {
		return nil
	}
	key := client.ObjectKey{Name: ref.Name}
	if r.Namespaced {
		key.Namespace = d.Namespace
	}
	return []reconcile.Request{{NamespacedName: key}}
}

// refused tells whether the object's current spec was already refused for good.
func refused(st *v1alpha2.ImportStatus, generation int64) bool {
	c := meta.FindStatusCondition(st.Conditions, v1alpha2.ImageConditionReady)
	return st.Phase == v1alpha2.ImageFailed && c != nil && c.Reason == v1alpha2.ReasonImportFailed && c.ObservedGeneration == generation
}

// importTempPattern names an import's temporary files (os.CreateTemp, filepath.Glob)
// beside the file named base. The '_' that ends the name is in no object name, so the
// pattern of image a never matches a temporary file of image a-b, whose import may run
// at the same time.
func importTempPattern(base string) string {
	return "." + base + "_*"
}

func openFile(path string) (io.ReadCloser, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", path, err)
	}
	return regularFile(f, path)
}

// regularFile returns f and its size if it is a regular file, and closes it otherwise:
// a device, FIFO or directory is no image.
func regularFile(f *os.File, name string) (io.ReadCloser, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, permanent("%s is not a regular file", name)
	}
	return f, fi.Size(), nil
}

func setReady(conds *[]metav1.Condition, ok bool, reason, msg string, gen int64) {
	s := metav1.ConditionFalse
	if ok {
		s = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{Type: v1alpha2.ImageConditionReady, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func humanBytes(n int64) string {
	return resource.NewQuantity(n, resource.BinarySI).String()
}
