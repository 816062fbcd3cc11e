package controller_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// put sends body to url as `curl -T` does and returns the answer's status and text.
func put(t *testing.T, url string, body io.Reader, length int64) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// A server that answers before reading a large body may reset the connection
		// while the client still sends: the answer is then lost.
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitUploadURLs waits for an object to wait for its upload and returns its URLs.
func waitUploadURLs(t *testing.T, obj client.Object) *v1alpha2.ImageUploadURLs {
	t.Helper()
	var urls *v1alpha2.ImageUploadURLs
	eventually(t, timeout, "WaitForUserUpload with upload URLs", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		st := obj.(interface{ ImportState() *v1alpha2.ImportStatus }).ImportState()
		urls = st.ImageUploadURLs
		// The envtest controller serves uploads on loopback only: no in-cluster URL.
		return st.Phase == v1alpha2.ImageWaitForUserUpload && urls != nil && urls.External != "" && urls.InCluster == "",
			fmt.Sprintf("%s %+v", st.Phase, urls)
	})
	return urls
}

// zeroes is an endless stream of zero bytes.
type zeroes struct{}

func (zeroes) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestUploadToVirtualImage: an image with an Upload source waits for its bytes and shows
// where to send them; a URL with another token, an upload above the size cap and bytes
// that do not match the checksum are refused (the image says why and still waits); the
// right bytes to the right URL make it Ready.
func TestUploadToVirtualImage(t *testing.T) {
	ns := newNamespace(t)
	body, err := os.ReadFile(sourceFile(t, ns+"-up.qcow2", "-f", "qcow2", "1M"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	vi := newVI(ns, "uploaded", v1alpha2.DataSource{Type: v1alpha2.SourceUpload,
		Upload: &v1alpha2.UploadSource{Checksum: &v1alpha2.Checksum{SHA256: hex.EncodeToString(sum[:])}}})
	createAll(t, vi)
	urls := waitUploadURLs(t, vi)
	if !strings.Contains(urls.External, "/upload/virtualimage/"+ns+"/uploaded/") {
		t.Errorf("upload URL %q", urls.External)
	}
	t.Logf("waiting: %s", imageReadyMessage(vi.Status.Conditions))

	// Another token: refused, and nothing about the object is told.
	i := strings.LastIndex(urls.External, "/")
	forged := urls.External[:i+1] + strings.Repeat("0", 64)
	if code, msg := put(t, forged, bytes.NewReader(body), int64(len(body))); code != http.StatusForbidden {
		t.Errorf("a forged token: %d %s", code, msg)
	}
	if code, _ := put(t, strings.Replace(urls.External, "/uploaded/", "/other/", 1), bytes.NewReader(body), int64(len(body))); code != http.StatusForbidden {
		t.Errorf("another object's name with this token: %d", code)
	}

	// Above the cap: refused before a byte is read, and the image says so.
	code, msg := put(t, urls.External, io.LimitReader(zeroes{}, testMaxImageSize+1), testMaxImageSize+1)
	if code != 0 && code != http.StatusRequestEntityTooLarge {
		t.Errorf("an oversized upload: %d %s", code, msg)
	}
	eventually(t, timeout, "the image says the oversized upload was refused", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(vi), vi)
		m := imageReadyMessage(vi.Status.Conditions)
		return vi.Status.Phase == v1alpha2.ImageWaitForUserUpload && strings.Contains(m, "refused") && strings.Contains(m, "limit"), m
	})
	// The same size without a length announced: stopped at the cap while reading.
	code, msg = put(t, urls.External, io.LimitReader(zeroes{}, testMaxImageSize+1<<20), -1)
	if code != 0 && code != http.StatusRequestEntityTooLarge {
		t.Errorf("an oversized chunked upload: %d %s", code, msg)
	}

	// Other bytes than the checksum's.
	other := append([]byte(nil), body...)
	other[len(other)-1] ^= 1
	if code, msg := put(t, urls.External, bytes.NewReader(other), int64(len(other))); code != http.StatusUnprocessableEntity || !strings.Contains(msg, "checksum mismatch") {
		t.Errorf("bytes that do not match the checksum: %d %s", code, msg)
	}

	code, msg = put(t, urls.External, bytes.NewReader(body), int64(len(body)))
	if code != http.StatusCreated {
		t.Fatalf("the upload: %d %s", code, msg)
	}
	t.Logf("the upload: %s", strings.TrimSpace(msg))
	vi = waitVI(t, ns, "uploaded", v1alpha2.ImageReady)
	if vi.Status.Format != "qcow2" || vi.Status.Size.UnpackedBytes != "1048576" || vi.Status.ImageUploadURLs != nil {
		t.Errorf("uploaded image: %+v", vi.Status)
	}
	if code, _ := put(t, urls.External, bytes.NewReader(body), int64(len(body))); code != http.StatusConflict && code != http.StatusForbidden {
		t.Errorf("an upload to a Ready image: %d", code)
	}
}

// TestUploadToDisk: a disk with an Upload source takes a raw image and becomes a qcow2
// of its size; an ISO is refused with the reason, and the disk waits for another upload.
func TestUploadToDisk(t *testing.T) {
	ns := newNamespace(t)
	vd := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "up"},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceUpload}}}
	q := resource.MustParse("16Mi")
	vd.Spec.PersistentVolumeClaim.Size = &q
	createAll(t, vd)
	urls := waitUploadURLs(t, vd)
	iso := make([]byte, 1<<20)
	copy(iso[32769:], "CD001")
	if code, msg := put(t, urls.External, bytes.NewReader(iso), int64(len(iso))); code != http.StatusCreated {
		t.Fatalf("an ISO upload to a disk: %d %s", code, msg)
	}
	eventually(t, timeout, "the disk refuses the ISO", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(vd), vd)
		m := imageReadyMessage(vd.Status.Conditions)
		return vd.Status.Phase == v1alpha2.ImageFailed && strings.Contains(m, "iso"), fmt.Sprintf("%s %s", vd.Status.Phase, m)
	})
	disk := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "raw"},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceUpload}}}
	disk.Spec.PersistentVolumeClaim.Size = &q
	createAll(t, disk)
	urls = waitUploadURLs(t, disk)
	raw, err := os.ReadFile(writeRawImage(t, ns+"-up.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if code, msg := put(t, urls.External, bytes.NewReader(raw), int64(len(raw))); code != http.StatusCreated {
		t.Fatalf("a raw upload to a disk: %d %s", code, msg)
	}
	disk = waitDisk(t, ns, "raw", v1alpha2.ImageReady)
	if size, backing := qemuInfo(t, disk.Status.Path); size != 16<<20 || backing != "" {
		t.Errorf("uploaded disk: %d bytes, backing %q", size, backing)
	}
}
