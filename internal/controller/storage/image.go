package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
)

// ImageReconciler imports ClusterVirtualImages into the shared storage.
type ImageReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Root is the shared storage directory.
	Root string
	// APIReader reads, past the cache, whether Ferry is being uninstalled (package
	// uninstall); nil: never.
	APIReader client.Reader
	// MaxImageSize caps the bytes one import may fetch (0: DefaultMaxImageSize).
	MaxImageSize int64
	// Backoff is the wait after a number of failed downloads (nil: backoff); tests
	// shorten it.
	Backoff func(failures int32) time.Duration
	// ProgressEvery is how often status.progress is written during a download (0: 3 s).
	ProgressEvery time.Duration
}

// SetupWithManager registers the controller.
func (r *ImageReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.ClusterVirtualImage{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Named("clustervirtualimage").
		Complete(r)
}

func (r *ImageReconciler) imagePath(name string) string {
	return filepath.Join(r.Root, "images", name+".img")
}

// errGone stops a download whose image was deleted meanwhile.
var errGone = errors.New("the image was deleted during its import")

// Reconcile imports one image.
func (r *ImageReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	img := &v1alpha2.ClusterVirtualImage{}
	if err := r.Client.Get(ctx, req.NamespacedName, img); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	path := r.imagePath(img.Name)
	if !img.DeletionTimestamp.IsZero() {
		if controllerutil.ContainsFinalizer(img, v1alpha2.FinalizerStorage) && uninstall.Terminating(ctx, r.APIReader, uninstall.CRDImages) {
			ctrl.LoggerFrom(ctx).Info("The ClusterVirtualImage CRD is being deleted: releasing the image, its file is kept", "path", path)
			return ctrl.Result{}, uninstall.Release(ctx, r.Client, img)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return ctrl.Result{}, err
		}
		controllerutil.RemoveFinalizer(img, v1alpha2.FinalizerStorage)
		return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, img))
	}
	if controllerutil.AddFinalizer(img, v1alpha2.FinalizerStorage) {
		if err := r.Client.Update(ctx, img); err != nil {
			return ctrl.Result{}, err
		}
	}
	if img.Status.Phase == v1alpha2.ImageReady && fileExists(path) {
		return ctrl.Result{}, nil
	}
	if refused(img) {
		// The spec is immutable: the same bytes would be refused again.
		return ctrl.Result{}, nil
	}
	if rt := img.Status.ImportRetry; rt != nil {
		if wait := time.Until(rt.NextAttemptTime.Time); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	st := &imageStatus{client: r.Client, img: img, base: img.DeepCopy()}
	img.Status.Phase = v1alpha2.ImageProvisioning
	setReady(&img.Status.Conditions, false, v1alpha2.ReasonProvisioning, "The image is being imported.", img.Generation)
	// The optimistic lock makes a reconcile that read a stale image from the cache (one
	// that misses the last failure's retry time, or Ready) fail here instead of
	// downloading again.
	if err := st.claim(ctx); apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	} else if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	info, err := r.importImage(ctx, img, path, st.reporter(ctx))
	switch {
	case errors.Is(err, errGone):
		return ctrl.Result{}, nil
	case err == nil:
		r.ready(img, info)
	case isPermanent(err):
		img.Status.Phase = v1alpha2.ImageFailed
		img.Status.Progress, img.Status.DownloadSpeed, img.Status.ImportRetry = "", nil, nil
		setReady(&img.Status.Conditions, false, v1alpha2.ReasonImportFailed, err.Error(), img.Generation)
		r.Recorder.Eventf(img, corev1.EventTypeWarning, v1alpha2.ReasonImportFailed, "Import failed: %v", err)
	default:
		return r.retryLater(ctx, st, err)
	}
	return ctrl.Result{}, st.patch(ctx)
}

func (r *ImageReconciler) ready(img *v1alpha2.ClusterVirtualImage, info imageInfo) {
	img.Status.Phase = v1alpha2.ImageReady
	img.Status.Format = info.Format
	img.Status.CDROM = info.Format == FormatISO
	img.Status.Path = r.imagePath(img.Name)
	img.Status.Progress = "100%"
	img.Status.ImportRetry = nil
	img.Status.Size = v1alpha2.ImageSize{
		Stored: humanBytes(info.ActualSize), StoredBytes: strconv.FormatInt(info.ActualSize, 10),
		Unpacked: humanBytes(info.VirtualSize), UnpackedBytes: strconv.FormatInt(info.VirtualSize, 10),
	}
	img.Status.ObservedGeneration = img.Generation
	setReady(&img.Status.Conditions, true, v1alpha2.ReasonImported, fmt.Sprintf("%s image, %s", info.Format, humanBytes(info.VirtualSize)), img.Generation)
	r.Recorder.Eventf(img, corev1.EventTypeNormal, v1alpha2.ReasonImported, "Imported %s image of %s", info.Format, humanBytes(info.VirtualSize))
}

// retryLater records a failed download and when the next one starts. The phase stays
// Provisioning, as Deckhouse's importer pod restarting after a failure keeps it.
func (r *ImageReconciler) retryLater(ctx context.Context, st *imageStatus, cause error) (ctrl.Result, error) {
	img := st.img
	failures := int32(1)
	if rt := img.Status.ImportRetry; rt != nil {
		failures = rt.Attempts + 1
	}
	wait := backoff(failures)
	if r.Backoff != nil {
		wait = r.Backoff(failures)
	}
	img.Status.ImportRetry = &v1alpha2.ImportRetry{Attempts: failures, LastError: cause.Error(), NextAttemptTime: metav1.NewTime(time.Now().Add(wait))}
	img.Status.DownloadSpeed = nil
	msg := fmt.Sprintf("Attempt %d failed: %v; trying again in %s", failures, cause, wait.Round(time.Second))
	setReady(&img.Status.Conditions, false, v1alpha2.ReasonProvisioning, msg, img.Generation)
	r.Recorder.Eventf(img, corev1.EventTypeWarning, v1alpha2.ReasonImportFailed, "%s", msg)
	return ctrl.Result{RequeueAfter: wait}, st.patch(ctx)
}

// refused tells whether the image's current spec was already refused for good.
func refused(img *v1alpha2.ClusterVirtualImage) bool {
	c := meta.FindStatusCondition(img.Status.Conditions, v1alpha2.ImageConditionReady)
	return img.Status.Phase == v1alpha2.ImageFailed && c != nil && c.Reason == v1alpha2.ReasonImportFailed && c.ObservedGeneration == img.Generation
}

// imageStatus writes an image's status as merge patches, each against what the last
// one wrote, so a field cleared after a progress report is cleared on the server too.
type imageStatus struct {
	client client.Client
	img    *v1alpha2.ClusterVirtualImage
	base   *v1alpha2.ClusterVirtualImage
}

func (s *imageStatus) claim(ctx context.Context) error {
	if err := s.client.Status().Patch(ctx, s.img, client.MergeFromWithOptions(s.base, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	s.base = s.img.DeepCopy()
	return nil
}

func (s *imageStatus) patch(ctx context.Context) error {
	if err := s.client.Status().Patch(ctx, s.img, client.MergeFrom(s.base)); err != nil {
		return client.IgnoreNotFound(err)
	}
	s.base = s.img.DeepCopy()
	return nil
}

// reporter shows a download's progress in status and stops the download when the
// image is deleted meanwhile.
func (s *imageStatus) reporter(ctx context.Context) func(progress) error {
	return func(p progress) error {
		var cur v1alpha2.ClusterVirtualImage
		if err := s.client.Get(ctx, client.ObjectKeyFromObject(s.img), &cur); apierrors.IsNotFound(err) || (err == nil && !cur.DeletionTimestamp.IsZero()) {
			return errGone
		}
		s.img.Status.Progress = p.percent()
		s.img.Status.DownloadSpeed = &v1alpha2.DownloadSpeed{
			Avg: humanBytes(p.Avg) + "/s", AvgBytes: strconv.FormatInt(p.Avg, 10),
			Current: humanBytes(p.Current) + "/s", CurrentBytes: strconv.FormatInt(p.Current, 10),
		}
		if err := s.patch(ctx); err != nil {
			// A missed report is no reason to drop the download.
			ctrl.LoggerFrom(ctx).Error(err, "Failed to write the import progress")
		}
		return nil
	}
}

// importImage fetches the image's bytes to path (through a temporary file, so a
// half-written image is never seen as ready) and checks them.
func (r *ImageReconciler) importImage(ctx context.Context, img *v1alpha2.ClusterVirtualImage, path string, report func(progress) error) (imageInfo, error) {
	src, total, err := r.open(ctx, img.Spec.DataSource)
	if err != nil {
		return imageInfo{}, err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return imageInfo{}, err
	}
	// What an import cut short (a controller restart) left behind.
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+img.Name+"-*"))
	for _, f := range stale {
		_ = os.Remove(f)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+img.Name+"-*")
	if err != nil {
		return imageInfo{}, err
	}
	defer os.Remove(tmp.Name())
	c := copier{maxSize: r.MaxImageSize, every: r.ProgressEvery, report: report, now: time.Now}
	if c.maxSize <= 0 {
		c.maxSize = DefaultMaxImageSize
	}
	if c.every <= 0 {
		c.every = 3 * time.Second
	}
	if h := img.Spec.DataSource.HTTP; img.Spec.DataSource.Type == v1alpha2.SourceHTTP && h != nil {
		c.checksum = h.Checksum
	}
	if _, err := c.copy(ctx, tmp, src, total); err != nil {
		tmp.Close()
		return imageInfo{}, err
	}
	if err := tmp.Close(); err != nil {
		return imageInfo{}, err
	}
	if err := convertToQcow2(ctx, tmp.Name()); err != nil {
		return imageInfo{}, permanentError{err}
	}
	info, err := inspect(ctx, tmp.Name())
	if err != nil {
		return imageInfo{}, permanentError{err}
	}
	return info, os.Rename(tmp.Name(), path)
}

// open starts reading an image's source; it returns the source's length when known.
func (r *ImageReconciler) open(ctx context.Context, ds v1alpha2.DataSource) (io.ReadCloser, int64, error) {
	switch ds.Type {
	case v1alpha2.SourceHTTP:
		if ds.HTTP == nil {
			return nil, 0, permanent("dataSource.http is required when type is HTTP")
		}
		u, err := url.Parse(ds.HTTP.URL)
		if err != nil {
			return nil, 0, permanent("dataSource.http.url: %w", err)
		}
		if u.Scheme == "file" {
			// A file being copied in may not be there yet: not found is tried again.
			return openFile(u.Path)
		}
		return get(ctx, u.String(), ds.HTTP.CABundle)
	case v1alpha2.SourceObjectRef:
		if ds.ObjectRef == nil {
			return nil, 0, permanent("dataSource.objectRef is required when type is ObjectRef")
		}
		var other v1alpha2.ClusterVirtualImage
		if err := r.Client.Get(ctx, client.ObjectKey{Name: ds.ObjectRef.Name}, &other); err != nil {
			return nil, 0, fmt.Errorf("source ClusterVirtualImage %s: %w", ds.ObjectRef.Name, err)
		}
		if other.Status.Phase != v1alpha2.ImageReady {
			return nil, 0, fmt.Errorf("source ClusterVirtualImage %s is not ready yet", ds.ObjectRef.Name)
		}
		return openFile(other.Status.Path)
	}
	return nil, 0, permanent("dataSource.type %q is not supported", ds.Type)
}

func openFile(path string) (io.ReadCloser, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, permanent("%s is not a regular file", path)
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
