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
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryvm/ferry/internal/netguard"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// importable is an object whose bytes are imported: a ClusterVirtualImage, a
// VirtualImage, or a VirtualDisk with an HTTP or Upload source.
type importable interface {
	client.Object
	ImportState() *v1alpha2.ImportStatus
}

// waitError is an import that cannot start yet and is no failure: an upload that did not
// arrive, a source object that is not Ready. The object waits (Pending, or
// WaitForUserUpload) and is looked at again soon.
type waitError struct {
	reason string
	error
}

func (e waitError) Unwrap() error { return e.error }

func waiting(reason, format string, args ...any) error {
	return waitError{reason, fmt.Errorf(format, args...)}
}

// importer reads an object's data source into a file of the storage and checks it: the
// one path every source type takes (open has a case per type), so every check applies
// to every source.
type importer struct {
	client     client.Client
	apiReader  client.Reader // reads pull Secrets past the cache (nil: client)
	root       string
	sourceDirs []string
	maxSize    int64
	every      time.Duration
	// guard decides which addresses HTTP and registry sources may reach (nil:
	// netguard.Default()).
	guard *netguard.Policy
}

// fetch reads obj's source into a new temporary file in dir, named by pattern, and checks
// it (format, no file named inside it; vdi and vhdx become qcow2). The caller renames
// the file into place or converts it, and removes it on error.
func (im importer) fetch(ctx context.Context, obj client.Object, ds v1alpha2.DataSource, src io.ReadCloser, total int64, dir, pattern string, report func(progress) error) (string, imageInfo, error) {
	defer src.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", imageInfo{}, err
	}
	// What an import cut short (a controller restart) left behind.
	stale, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, f := range stale {
		_ = os.Remove(f)
	}
	tmp, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", imageInfo{}, err
	}
	fail := func(err error) (string, imageInfo, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", imageInfo{}, err
	}
	c := copier{maxSize: im.maxSize, every: im.every, report: report, now: time.Now, checksum: ds.Checksum()}
	if c.maxSize <= 0 {
		c.maxSize = DefaultMaxImageSize
	}
	if c.every <= 0 {
		c.every = 3 * time.Second
	}
	if _, err := c.copy(ctx, tmp, src, total); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := convertToQcow2(ctx, tmp.Name()); err != nil {
		return fail(permanentError{err})
	}
	info, err := inspect(ctx, tmp.Name())
	if err != nil {
		return fail(permanentError{err})
	}
	return tmp.Name(), info, nil
}

// open starts reading an object's source; it returns the source's length when known.
// A source type is one case here.
func (im importer) open(ctx context.Context, obj client.Object, ds v1alpha2.DataSource) (io.ReadCloser, int64, error) {
	switch ds.Type {
	case v1alpha2.SourceHTTP:
		if ds.HTTP == nil {
			return nil, 0, permanent("dataSource.http is required when type is HTTP")
		}
		u, err := url.Parse(ds.HTTP.URL)
		if err != nil {
			return nil, 0, permanent("dataSource.http.url: %w", err)
		}
		switch u.Scheme {
		case "file":
			if obj.GetNamespace() != "" {
				// The directories are the operator's; a namespace's objects are tenants'.
				return nil, 0, permanent("file:// URLs are for ClusterVirtualImages only: a %s is a namespace's object, and the directories file:// reads from are the cluster operator's; use an http:// or https:// URL, or make the image from a ClusterVirtualImage (objectRef)", kindOf(obj))
			}
			return openSourceFile(im.sourceDirs, im.root, u)
		case "http", "https":
			return get(ctx, u.String(), ds.HTTP.CABundle, im.guard)
		}
		return nil, 0, permanent("dataSource.http.url: scheme %q is not supported: use http://, https:// or file://", u.Scheme)
	case v1alpha2.SourceObjectRef:
		if ds.ObjectRef == nil {
			return nil, 0, permanent("dataSource.objectRef is required when type is ObjectRef")
		}
		return im.openObject(ctx, obj.GetNamespace(), *ds.ObjectRef)
	case v1alpha2.SourceUpload:
		return openUpload(im.root, obj)
	case v1alpha2.SourceContainerImage:
		return im.openContainerImage(ctx, ds.ContainerImage, obj.GetNamespace())
	}
	return nil, 0, permanent("dataSource.type %q is not supported", ds.Type)
}

// streebogNote says, for a ready object, that a Streebog checksum was not checked.
func streebogNote(c *v1alpha2.Checksum) string {
	if c == nil || (c.Streebog256 == "" && c.Streebog512 == "") {
		return ""
	}
	return "; its streebog checksum was not checked: Ferry has no Streebog (GOST R 34.11-2012) implementation, and checked only the md5/sha1/sha256/sha512 sums given"
}

// statusWriter writes an object's status as merge patches, each against what the last
// one wrote, so a field cleared after a progress report is cleared on the server too.
type statusWriter struct {
	client client.Client
	obj    importable
	base   client.Object
}

func newStatusWriter(c client.Client, obj importable) *statusWriter {
	return &statusWriter{client: c, obj: obj, base: obj.DeepCopyObject().(client.Object)}
}

// claim writes the status (changed or not) with the object's resourceVersion: a reconcile that read a
// stale object from the cache (one that misses the last failure's retry time, or Ready)
// fails here instead of importing again.
func (s *statusWriter) claim(ctx context.Context) error {
	if err := s.client.Status().Patch(ctx, s.obj, client.MergeFromWithOptions(s.base, client.MergeFromWithOptimisticLock{})); err != nil {
		return err
	}
	s.base = s.obj.DeepCopyObject().(client.Object)
	return nil
}

func (s *statusWriter) patch(ctx context.Context) error {
	if err := s.client.Status().Patch(ctx, s.obj, client.MergeFrom(s.base)); err != nil {
		return client.IgnoreNotFound(err)
	}
	s.base = s.obj.DeepCopyObject().(client.Object)
	return nil
}

// changed tells whether the status differs from what was last read or written.
func (s *statusWriter) changed() bool {
	return !equality.Semantic.DeepEqual(s.obj.ImportState(), s.base.(importable).ImportState())
}

// reporter shows an import's progress in status and stops the import when the object
// is deleted meanwhile.
func (s *statusWriter) reporter(ctx context.Context) func(progress) error {
	return func(p progress) error {
		cur := s.obj.DeepCopyObject().(client.Object)
		if err := s.client.Get(ctx, client.ObjectKeyFromObject(s.obj), cur); apierrors.IsNotFound(err) || (err == nil && !cur.GetDeletionTimestamp().IsZero()) {
			return errGone
		}
		showProgress(s.obj.ImportState(), p)
		if err := s.patch(ctx); err != nil {
			// A missed report is no reason to drop the import.
			ctrl.LoggerFrom(ctx).Error(err, "Failed to write the import progress")
		}
		return nil
	}
}

func showProgress(st *v1alpha2.ImportStatus, p progress) {
	st.Progress = p.percent()
	st.DownloadSpeed = &v1alpha2.DownloadSpeed{
		Avg: humanBytes(p.Avg) + "/s", AvgBytes: strconv.FormatInt(p.Avg, 10),
		Current: humanBytes(p.Current) + "/s", CurrentBytes: strconv.FormatInt(p.Current, 10),
	}
}

// run drives the import of obj's source ds, the same for an image and a disk: it stops
// at a spec refused for good and waits out a retry back-off; claims the object (a stale
// read stops there instead of downloading again); opens the source (or records why it
// cannot yet); shows Provisioning; fetches and checks the bytes into a temporary file in
// dir; then place writes them where they belong and ready records the result in status.
// Whatever fails is recorded (record).
func (o importOutcome) run(ctx context.Context, im importer, w *statusWriter, ds v1alpha2.DataSource, dir, pattern, what string,
	place func(tmp string, info imageInfo) error, ready func(info imageInfo) error) (ctrl.Result, error) {
	st, gen := w.obj.ImportState(), w.obj.GetGeneration()
	if refused(st, gen) {
		// The source is immutable: the same bytes would be refused again.
		return ctrl.Result{}, nil
	}
	if rt := st.ImportRetry; rt != nil {
		if wait := time.Until(rt.NextAttemptTime.Time); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	if err := w.claim(ctx); apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	} else if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	src, total, err := im.open(ctx, w.obj, ds)
	if err != nil {
		return o.record(ctx, w, err)
	}
	st.Phase, st.ImageUploadURLs = v1alpha2.ImageProvisioning, nil
	setReady(&st.Conditions, false, v1alpha2.ReasonProvisioning, "The "+what+" is being imported.", gen)
	if err := w.patch(ctx); err != nil {
		src.Close()
		return ctrl.Result{}, err
	}
	tmp, info, err := im.fetch(ctx, w.obj, ds, src, total, dir, pattern, w.reporter(ctx))
	if err == nil {
		err = place(tmp, info)
		os.Remove(tmp)
	}
	if err == nil && ds.Type == v1alpha2.SourceUpload {
		removeUpload(im.root, w.obj)
	}
	if err == nil {
		err = ready(info)
	}
	if err != nil {
		return o.record(ctx, w, err)
	}
	return ctrl.Result{}, w.patch(ctx)
}

// importOutcome records how an import ended in the object's status: waiting, failed for
// good, or failed for now and tried again after a back-off. It returns the result to
// give the controller.
type importOutcome struct {
	recorder record.EventRecorder
	backoff  func(failures int32) time.Duration
	uploads  *Uploads
	// root is the shared storage directory (where uploads arrive).
	root string
}

func (o importOutcome) record(ctx context.Context, st *statusWriter, err error) (ctrl.Result, error) {
	obj, s := st.obj, st.obj.ImportState()
	var w waitError
	switch {
	case errors.Is(err, errGone):
		return ctrl.Result{}, nil
	case errors.As(err, &w):
		return o.wait(ctx, st, w)
	case isPermanent(err):
		s.Phase = v1alpha2.ImageFailed
		s.Progress, s.DownloadSpeed, s.ImportRetry, s.ImageUploadURLs = "", nil, nil, nil
		setReady(&s.Conditions, false, v1alpha2.ReasonImportFailed, err.Error(), obj.GetGeneration())
		o.recorder.Eventf(obj, corev1.EventTypeWarning, v1alpha2.ReasonImportFailed, "Import failed: %v", err)
		return ctrl.Result{}, st.patch(ctx)
	}
	return o.retryLater(ctx, st, err)
}

// wait shows why the import cannot start yet; an upload shows where to send it.
func (o importOutcome) wait(ctx context.Context, st *statusWriter, w waitError) (ctrl.Result, error) {
	s := st.obj.ImportState()
	s.Phase, s.DownloadSpeed, s.ImportRetry = v1alpha2.ImagePending, nil, nil
	every := 5 * time.Second
	if w.reason == v1alpha2.ReasonWaitForUserUpload {
		s.Phase, s.Progress = v1alpha2.ImageWaitForUserUpload, ""
		urls, err := o.uploads.urls(st.obj)
		if err != nil {
			return ctrl.Result{}, err
		}
		s.ImageUploadURLs = urls
		if p, ok := uploadProgressOf(o.root, st.obj); ok {
			// The upload is arriving: shown as Deckhouse shows it.
			s.Phase = v1alpha2.ImageProvisioning
			showProgress(s, p)
		}
		every = 2 * time.Second
	}
	setReady(&s.Conditions, false, w.reason, w.Error(), st.obj.GetGeneration())
	if !st.changed() {
		return ctrl.Result{RequeueAfter: every}, nil
	}
	return ctrl.Result{RequeueAfter: every}, st.patch(ctx)
}

// retryLater records a failed download and when the next one starts. The phase stays
// Provisioning, as Deckhouse's importer pod restarting after a failure keeps it.
func (o importOutcome) retryLater(ctx context.Context, st *statusWriter, cause error) (ctrl.Result, error) {
	s := st.obj.ImportState()
	failures := int32(1)
	if rt := s.ImportRetry; rt != nil {
		failures = rt.Attempts + 1
	}
	wait := backoff(failures)
	if o.backoff != nil {
		wait = o.backoff(failures)
	}
	s.Phase, s.ImageUploadURLs = v1alpha2.ImageProvisioning, nil
	s.ImportRetry = &v1alpha2.ImportRetry{Attempts: failures, LastError: cause.Error(), NextAttemptTime: metav1.NewTime(time.Now().Add(wait))}
	s.DownloadSpeed = nil
	msg := fmt.Sprintf("Attempt %d failed: %v; trying again in %s", failures, cause, wait.Round(time.Second))
	setReady(&s.Conditions, false, v1alpha2.ReasonProvisioning, msg, st.obj.GetGeneration())
	o.recorder.Eventf(st.obj, corev1.EventTypeWarning, v1alpha2.ReasonImportFailed, "%s", msg)
	return ctrl.Result{RequeueAfter: wait}, st.patch(ctx)
}
