package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
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

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// ImageReconciler imports ClusterVirtualImages into the shared storage.
type ImageReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Root is the shared storage directory.
	Root string
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

// Reconcile imports one image.
func (r *ImageReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	img := &v1alpha2.ClusterVirtualImage{}
	if err := r.Client.Get(ctx, req.NamespacedName, img); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	path := r.imagePath(img.Name)
	if !img.DeletionTimestamp.IsZero() {
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
	orig := img.DeepCopy()
	info, err := r.importImage(ctx, img, path)
	if err != nil {
		img.Status.Phase = v1alpha2.ImageFailed
		setReady(&img.Status.Conditions, false, v1alpha2.ReasonImportFailed, err.Error(), img.Generation)
		r.Recorder.Eventf(img, corev1.EventTypeWarning, v1alpha2.ReasonImportFailed, "Import failed: %v", err)
		// A source may appear later (a file being copied, a server starting): retry slowly.
		return ctrl.Result{RequeueAfter: time.Minute}, r.Client.Status().Patch(ctx, img, client.MergeFrom(orig))
	}
	img.Status.Phase = v1alpha2.ImageReady
	img.Status.Format = info.Format
	img.Status.Path = path
	img.Status.Size = v1alpha2.ImageSize{Stored: humanBytes(info.ActualSize), Unpacked: humanBytes(info.VirtualSize)}
	img.Status.ObservedGeneration = img.Generation
	setReady(&img.Status.Conditions, true, v1alpha2.ReasonImported, fmt.Sprintf("%s image, %s", info.Format, humanBytes(info.VirtualSize)), img.Generation)
	r.Recorder.Eventf(img, corev1.EventTypeNormal, v1alpha2.ReasonImported, "Imported %s image of %s", info.Format, humanBytes(info.VirtualSize))
	return ctrl.Result{}, r.Client.Status().Patch(ctx, img, client.MergeFrom(orig))
}

// importImage fetches the image's bytes to path (through a temporary file, so a
// half-written image is never seen as ready) and checks them.
func (r *ImageReconciler) importImage(ctx context.Context, img *v1alpha2.ClusterVirtualImage, path string) (imageInfo, error) {
	src, err := r.open(ctx, img.Spec.DataSource)
	if err != nil {
		return imageInfo{}, err
	}
	defer src.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return imageInfo{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+img.Name+"-*")
	if err != nil {
		return imageInfo{}, err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return imageInfo{}, fmt.Errorf("copying the image: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return imageInfo{}, err
	}
	info, err := inspect(ctx, tmp.Name())
	if err != nil {
		return imageInfo{}, err
	}
	return info, os.Rename(tmp.Name(), path)
}

func (r *ImageReconciler) open(ctx context.Context, ds v1alpha2.DataSource) (io.ReadCloser, error) {
	switch ds.Type {
	case v1alpha2.SourceHTTP:
		u, err := url.Parse(ds.HTTP.URL)
		if err != nil {
			return nil, fmt.Errorf("dataSource.http.url: %w", err)
		}
		if u.Scheme == "file" {
			f, err := os.Open(u.Path)
			if err != nil {
				return nil, fmt.Errorf("reading %s: %w", u.Path, err)
			}
			return f, nil
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("downloading %s: %w", u, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("downloading %s: %s", u, resp.Status)
		}
		return resp.Body, nil
	case v1alpha2.SourceObjectRef:
		var other v1alpha2.ClusterVirtualImage
		if err := r.Client.Get(ctx, client.ObjectKey{Name: ds.ObjectRef.Name}, &other); err != nil {
			return nil, fmt.Errorf("source ClusterVirtualImage %s: %w", ds.ObjectRef.Name, err)
		}
		if other.Status.Phase != v1alpha2.ImageReady {
			return nil, fmt.Errorf("source ClusterVirtualImage %s is not ready yet", ds.ObjectRef.Name)
		}
		return os.Open(other.Status.Path)
	}
	return nil, fmt.Errorf("dataSource.type %q is not supported", ds.Type)
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
