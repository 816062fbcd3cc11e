package cli

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
)

// TestUploadSendsTheFileToTheStatusURL: `ferry v upload` reads the URL from the object's
// status (external, or inCluster) and PUTs the file there with its length; a refusal is
// an error that carries the server's reason.
func TestUploadSendsTheFileToTheStatusURL(t *testing.T) {
	var got []byte
	var length int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Path != "/upload/virtualimage/ns/img/tok" {
			http.Error(w, "not an upload URL", http.StatusForbidden)
			return
		}
		got, _ = io.ReadAll(r.Body)
		length = r.ContentLength
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "Received a raw image\n")
	}))
	defer srv.Close()
	vi := &v1alpha2.VirtualImage{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "img"},
		Status: v1alpha2.VirtualImageStatus{ImageStatus: v1alpha2.ImageStatus{ImportStatus: v1alpha2.ImportStatus{
			Phase:           v1alpha2.ImageWaitForUserUpload,
			ImageUploadURLs: &v1alpha2.ImageUploadURLs{External: srv.URL + "/upload/virtualimage/ns/img/tok", InCluster: srv.URL + "/elsewhere"}}}}}
	c := fake.NewClientBuilder().WithScheme(controller.NewScheme()).WithObjects(vi).Build()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	file := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(file, []byte(strings.Repeat("x", 4096)), 0o644); err != nil {
		t.Fatal(err)
	}
	url, err := uploadURL(ctx, c, client.ObjectKeyFromObject(vi), &v1alpha2.VirtualImage{}, false)
	if err != nil {
		t.Fatal(err)
	}
	answer, err := putFile(ctx, srv.Client(), url, file)
	if err != nil || !strings.Contains(answer, "Received") || len(got) != 4096 || length != 4096 {
		t.Errorf("upload: %q, %v; the server got %d bytes, length %d", answer, err, len(got), length)
	}
	url, err = uploadURL(ctx, c, client.ObjectKeyFromObject(vi), &v1alpha2.VirtualImage{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := putFile(ctx, srv.Client(), url, file); err == nil || !strings.Contains(err.Error(), "not an upload URL") {
		t.Errorf("a refused upload: %v", err)
	}
}
