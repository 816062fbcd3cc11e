package storage

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/netguard"
)

// rawDisk is a bootable raw image of n bytes.
func rawDisk(n int) []byte {
	b := make([]byte, n)
	b[510], b[511] = 0x55, 0xAA
	for i := 1024; i < n; i += 4096 {
		b[i] = byte(i / 4096)
	}
	return b
}

// imageEnv is an ImageReconciler over a fake client that records every status.progress
// it writes (the fake client is there to observe the patches between two reconciles).
type imageEnv struct {
	r        *ImageReconciler
	c        client.Client
	mu       sync.Mutex
	progress []string
}

func newImageEnv(t *testing.T, objs ...client.Object) *imageEnv {
	t.Helper()
	s := runtime.NewScheme()
	if err := v1alpha2.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	e := &imageEnv{}
	e.c = fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).
		WithStatusSubresource(&v1alpha2.ClusterVirtualImage{}).
		WithInterceptorFuncs(interceptor.Funcs{SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if img, ok := obj.(*v1alpha2.ClusterVirtualImage); ok && img.Status.Progress != "" {
				e.mu.Lock()
				e.progress = append(e.progress, img.Status.Progress)
				e.mu.Unlock()
			}
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		}}).Build()
	e.r = &ImageReconciler{Client: e.c, Recorder: record.NewFakeRecorder(100), Root: t.TempDir(), Destinations: loopbackAllowed,
		Backoff: func(int32) time.Duration { return 0 }, ProgressEvery: time.Nanosecond}
	return e
}

// loopbackAllowed is the import policy of these tests, whose servers are on loopback.
var loopbackAllowed = func() *netguard.Policy {
	p, err := netguard.New([]string{"127.0.0.0/8", "::1"}, netguard.DefaultDenied)
	if err != nil {
		panic(err)
	}
	return p
}()

func httpImage(name, url string, sum *v1alpha2.Checksum) *v1alpha2.ClusterVirtualImage {
	return &v1alpha2.ClusterVirtualImage{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceHTTP,
			HTTP: &v1alpha2.HTTPSource{URL: url, Checksum: sum}}},
	}
}

// reconcile runs one Reconcile and returns the image as it is afterwards.
func (e *imageEnv) reconcile(t *testing.T, name string) (*v1alpha2.ClusterVirtualImage, ctrl.Result) {
	t.Helper()
	res, err := e.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Name: name}})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	img := &v1alpha2.ClusterVirtualImage{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Name: name}, img); err != nil {
		t.Fatal(err)
	}
	return img, res
}

func readyCondition(img *v1alpha2.ClusterVirtualImage) string {
	c := meta.FindStatusCondition(img.Status.Conditions, v1alpha2.ImageConditionReady)
	if c == nil {
		return "no Ready condition"
	}
	return c.Reason + ": " + c.Message
}

// TestDownloadRetriedUntilItSucceeds: a server that fails twice (a 503, then a
// connection cut mid-body) and then answers gives a Ready image; in between the image
// stays Provisioning and its status says the attempt and the error.
func TestDownloadRetriedUntilItSucceeds(t *testing.T) {
	body := rawDisk(3 << 20)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 2:
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body[:1000])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection drops mid-body
		default:
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			for off := 0; off < len(body); off += 256 << 10 {
				w.Write(body[off:min(off+256<<10, len(body))])
				w.(http.Flusher).Flush()
			}
		}
	}))
	defer srv.Close()
	sum := sha256.Sum256(body)
	e := newImageEnv(t, httpImage("img", srv.URL+"/disk.raw", &v1alpha2.Checksum{SHA256: hex.EncodeToString(sum[:])}))

	img, res := e.reconcile(t, "img")
	if img.Status.Phase != v1alpha2.ImageProvisioning || img.Status.ImportRetry == nil || img.Status.ImportRetry.Attempts != 1 ||
		!strings.Contains(img.Status.ImportRetry.LastError, "503") || !strings.Contains(readyCondition(img), "Attempt 1 failed") {
		t.Fatalf("after a 503: phase %s, retry %+v, condition %s", img.Status.Phase, img.Status.ImportRetry, readyCondition(img))
	}
	if res.RequeueAfter != 0 {
		t.Errorf("requeue after %s, want the injected back-off of 0", res.RequeueAfter)
	}
	img, _ = e.reconcile(t, "img")
	if img.Status.Phase != v1alpha2.ImageProvisioning || img.Status.ImportRetry == nil || img.Status.ImportRetry.Attempts != 2 {
		t.Fatalf("after a connection cut mid-body: phase %s, retry %+v, condition %s", img.Status.Phase, img.Status.ImportRetry, readyCondition(img))
	}
	t.Logf("after two failures: %s", readyCondition(img))
	img, _ = e.reconcile(t, "img")
	if img.Status.Phase != v1alpha2.ImageReady || img.Status.Format != FormatRaw || img.Status.ImportRetry != nil || img.Status.Progress != "100%" {
		t.Fatalf("third attempt: phase %s, format %s, retry %+v, progress %q, condition %s",
			img.Status.Phase, img.Status.Format, img.Status.ImportRetry, img.Status.Progress, readyCondition(img))
	}
	if img.Status.Size.UnpackedBytes != fmt.Sprint(len(body)) {
		t.Errorf("unpackedBytes %s, want %d", img.Status.Size.UnpackedBytes, len(body))
	}
	// Progress was reported while the bytes came in, below 100% until the image was checked.
	e.mu.Lock()
	defer e.mu.Unlock()
	var partial int
	for _, p := range e.progress {
		if p != "100%" {
			partial++
		}
	}
	if partial == 0 {
		t.Errorf("no progress reported during the download; status.progress values: %v", e.progress)
	}
	t.Logf("status.progress values: %v", e.progress)
}

func TestBackoffDoublesToFiveMinutes(t *testing.T) {
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for i, w := range want {
		if got := backoff(int32(i + 1)); got != w {
			t.Errorf("after %d failures: %s, want %s", i+1, got, w)
		}
	}
	if got := backoff(1000); got != 5*time.Minute {
		t.Errorf("after 1000 failures: %s", got)
	}
}

// TestChecksumMismatchFails: a checksum mismatch is Failed for good, with both sums.
func TestChecksumMismatchFails(t *testing.T) {
	body := rawDisk(1 << 20)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Write(body)
	}))
	defer srv.Close()
	wrong := strings.Repeat("0", 32)
	e := newImageEnv(t, httpImage("img", srv.URL, &v1alpha2.Checksum{MD5: wrong}))
	img, res := e.reconcile(t, "img")
	got := md5.Sum(body)
	cond := readyCondition(img)
	if img.Status.Phase != v1alpha2.ImageFailed || !strings.HasPrefix(cond, v1alpha2.ReasonImportFailed) ||
		!strings.Contains(cond, hex.EncodeToString(got[:])) || !strings.Contains(cond, wrong) {
		t.Fatalf("phase %s, condition %s; want Failed naming both sums", img.Status.Phase, cond)
	}
	if res.RequeueAfter != 0 {
		t.Errorf("a refused image is requeued after %s", res.RequeueAfter)
	}
	// The same spec is not fetched again.
	e.reconcile(t, "img")
	if n := calls.Load(); n != 1 {
		t.Errorf("%d downloads of a refused image, want 1", n)
	}
}

func TestSizeCapFails(t *testing.T) {
	body := rawDisk(2 << 20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		}
		// Without Content-Length (chunked), the cap is found while reading.
		w.Write(body)
	}))
	defer srv.Close()
	for _, path := range []string{"/sized", "/chunked"} {
		e := newImageEnv(t, httpImage("img", srv.URL+path, nil))
		e.r.MaxImageSize = 1 << 20
		img, _ := e.reconcile(t, "img")
		if cond := readyCondition(img); img.Status.Phase != v1alpha2.ImageFailed || !strings.Contains(cond, "--max-image-size") {
			t.Errorf("%s: phase %s, condition %s; want Failed naming the limit", path, img.Status.Phase, cond)
		}
	}
}

// TestCABundle: an https server with its own CA is trusted when caBundle holds the CA,
// and not otherwise (the unknown authority is tried again, as a fault of the transport).
func TestCABundle(t *testing.T) {
	body := rawDisk(1 << 20)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	ca := pemCert(srv.Certificate().Raw)
	withCA := httpImage("with-ca", srv.URL, nil)
	withCA.Spec.DataSource.HTTP.CABundle = ca
	e := newImageEnv(t, withCA, httpImage("without-ca", srv.URL, nil))
	if img, _ := e.reconcile(t, "with-ca"); img.Status.Phase != v1alpha2.ImageReady {
		t.Errorf("with caBundle: phase %s, %s", img.Status.Phase, readyCondition(img))
	}
	if img, _ := e.reconcile(t, "without-ca"); img.Status.Phase == v1alpha2.ImageReady || !strings.Contains(readyCondition(img), "certificate") {
		t.Errorf("without caBundle: phase %s, %s", img.Status.Phase, readyCondition(img))
	}
	bad := httpImage("bad-ca", srv.URL, nil)
	bad.Spec.DataSource.HTTP.CABundle = []byte("not a certificate")
	e = newImageEnv(t, bad)
	if img, _ := e.reconcile(t, "bad-ca"); img.Status.Phase != v1alpha2.ImageFailed || !strings.Contains(readyCondition(img), "caBundle") {
		t.Errorf("bad caBundle: phase %s, %s", img.Status.Phase, readyCondition(img))
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
