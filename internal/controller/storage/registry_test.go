package storage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/registry"
)

// fakeRegistry serves blobs and manifests from memory, as a registry's pull API does,
// with an optional token flow (Bearer, a realm at /token) or Basic authentication.
type fakeRegistry struct {
	srv       *httptest.Server
	mu        sync.Mutex
	blobs     map[string][]byte // by digest
	manifests map[string]fakeManifest
	// served replaces a blob's bytes on the wire (a registry that sends other bytes).
	served map[string][]byte
	// auth: "" (anonymous), "bearer" or "basic"; user and pass are the credentials.
	auth, user, pass string
	tokens           int // tokens issued
}

type fakeManifest struct {
	mediaType string
	body      []byte
}

func newFakeRegistry(t *testing.T, tls bool) *fakeRegistry {
	f := &fakeRegistry{blobs: map[string][]byte{}, manifests: map[string]fakeManifest{}, served: map[string][]byte{}}
	if tls {
		f.srv = httptest.NewTLSServer(f)
	} else {
		f.srv = httptest.NewServer(f)
	}
	t.Cleanup(f.srv.Close)
	return f
}

// host is the registry's host:port, for an image reference.
func (f *fakeRegistry) host() string {
	return strings.TrimPrefix(strings.TrimPrefix(f.srv.URL, "http://"), "https://")
}

const fakeToken = "t0ken"

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path == "/token" {
		if u, p, ok := r.BasicAuth(); !ok || u != f.user || p != f.pass {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("service") != "fake" || r.URL.Query().Get("scope") == "" {
			http.Error(w, "no service or scope", http.StatusBadRequest)
			return
		}
		f.tokens++
		json.NewEncoder(w).Encode(map[string]string{"token": fakeToken})
		return
	}
	switch f.auth {
	case "bearer":
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="fake",scope="repository:disks/tiny:pull"`, f.srv.URL))
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"token needed"}]}`, http.StatusUnauthorized)
			return
		}
	case "basic":
		if u, p, ok := r.BasicAuth(); !ok || u != f.user || p != f.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
	}
	path := strings.TrimPrefix(r.URL.Path, "/v2/")
	if i := strings.Index(path, "/blobs/"); i >= 0 {
		d := path[i+len("/blobs/"):]
		b, ok := f.blobs[d]
		if !ok {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"no such blob"}]}`, http.StatusNotFound)
			return
		}
		if s, ok := f.served[d]; ok {
			b = s
		}
		w.Write(b)
		return
	}
	m, ok := f.manifests[path]
	if !ok {
		http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such manifest"}]}`, http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", m.mediaType)
	w.Header().Set("Docker-Content-Digest", registry.DigestOf(m.body))
	w.Write(m.body)
}

// blob stores b and describes it.
func (f *fakeRegistry) blob(mediaType string, b []byte) registry.Descriptor {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := registry.Descriptor{MediaType: mediaType, Digest: registry.DigestOf(b), Size: int64(len(b))}
	f.blobs[d.Digest] = b
	return d
}

// manifest stores a manifest or index under repo, by tag (if any) and by digest.
func (f *fakeRegistry) manifest(repo, tag, mediaType string, doc any) registry.Descriptor {
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d := registry.Descriptor{MediaType: mediaType, Digest: registry.DigestOf(b), Size: int64(len(b))}
	f.manifests[repo+"/manifests/"+d.Digest] = fakeManifest{mediaType, b}
	if tag != "" {
		f.manifests[repo+"/manifests/"+tag] = fakeManifest{mediaType, b}
	}
	return d
}

// image stores an image of the given layers as repo:tag.
func (f *fakeRegistry) image(repo, tag, mediaType string, layers ...registry.Descriptor) registry.Descriptor {
	config := f.blob(registry.MediaTypeOCIConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	return f.manifest(repo, tag, mediaType, registry.Manifest{SchemaVersion: 2, MediaType: mediaType, Config: config, Layers: layers})
}

type entry struct {
	name string
	typ  byte
	body []byte
}

func file(name string, body []byte) entry { return entry{name, tar.TypeReg, body} }

// layer stores a tar layer of the entries, gzipped or not.
func (f *fakeRegistry) layer(gz bool, entries ...entry) registry.Descriptor {
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == tar.TypeSymlink {
			h.Linkname, h.Size = "/etc/shadow", 0
		}
		if e.typ == tar.TypeDir {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		tw.Write(e.body)
	}
	tw.Close()
	mt := registry.MediaTypeOCILayer
	if gz {
		zw.Close()
		mt = registry.MediaTypeOCILayerGzip
	}
	return f.blob(mt, buf.Bytes())
}

// pull runs the ContainerImage source as the image controller does and reads it whole.
func pull(t *testing.T, r *ImageReconciler, src *v1alpha2.ContainerImageSource, namespace string) ([]byte, int64, error) {
	t.Helper()
	if r == nil {
		r = &ImageReconciler{}
	}
	if r.Destinations == nil {
		r.Destinations = loopbackAllowed
	}
	rc, total, err := r.importer().openContainerImage(context.Background(), src, namespace)
	if err != nil {
		return nil, 0, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return b, total, err
}

func ci(image string) *v1alpha2.ContainerImageSource {
	return &v1alpha2.ContainerImageSource{Image: image}
}

// TestPullContainerDisk: the disk file of OCI and Docker images, gzip or plain layers, by
// tag, by digest and through an index's linux/amd64 entry.
func TestPullContainerDisk(t *testing.T) {
	f := newFakeRegistry(t, false)
	disk := rawDisk(3 << 20)
	gz := f.layer(true, entry{"disk/", tar.TypeDir, nil}, file("disk/tiny.img", disk))
	plain := f.layer(false, file("./disk/tiny.img", disk))
	extra := f.layer(true, file("etc/motd", []byte("hello")), file("disk/sub/notes.txt", []byte("not the disk")))
	oci := f.image("disks/tiny", "oci", registry.MediaTypeOCIManifest, gz)
	f.image("disks/tiny", "docker", registry.MediaTypeDockerManifest, plain, extra)
	arm := f.image("disks/tiny", "", registry.MediaTypeOCIManifest, f.layer(true, file("disk/arm.img", []byte("arm"))))
	amd := oci
	arm.Platform = &registry.Platform{OS: "linux", Architecture: "arm64"}
	amd.Platform = &registry.Platform{OS: "linux", Architecture: "amd64"}
	f.manifest("disks/tiny", "multi", registry.MediaTypeOCIIndex, registry.Index{SchemaVersion: 2, MediaType: registry.MediaTypeOCIIndex, Manifests: []registry.Descriptor{arm, amd}})
	f.manifest("disks/tiny", "list", registry.MediaTypeDockerList, registry.Index{SchemaVersion: 2, MediaType: registry.MediaTypeDockerList, Manifests: []registry.Descriptor{arm, amd}})

	for _, ref := range []string{"oci", "docker", "multi", "list"} {
		t.Run(ref, func(t *testing.T) {
			got, total, err := pull(t, nil, ci(f.host()+"/disks/tiny:"+ref), "")
			if err != nil {
				t.Fatal(err)
			}
			if total != int64(len(disk)) || !bytes.Equal(got, disk) {
				t.Errorf("got %d bytes (announced %d), want the disk's %d", len(got), total, len(disk))
			}
		})
	}
	if _, _, err := pull(t, nil, ci(f.host()+"/disks/tiny@"+oci.Digest), ""); err != nil {
		t.Errorf("by digest: %v", err)
	}
}

// TestPullRefusesWrongImages: what is no containerDisk, or is not what its manifest says,
// is refused for good; a missing image is tried again.
func TestPullRefusesWrongImages(t *testing.T) {
	f := newFakeRegistry(t, false)
	disk := rawDisk(1 << 20)
	f.image("disks/none", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("etc/motd", []byte("hi")), file("disk/sub/x.img", disk)))
	f.image("disks/two", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("disk/a.img", disk)), f.layer(false, file("disk/b.img", disk)))
	f.image("disks/link", "v1", registry.MediaTypeOCIManifest, f.layer(true, entry{"disk/a.img", tar.TypeSymlink, nil}))
	bad := f.layer(true, file("disk/bad.img", disk))
	f.image("disks/tampered", "v1", registry.MediaTypeOCIManifest, bad)
	tampered := bytes.Clone(f.blobs[bad.Digest])
	tampered[len(tampered)-10] ^= 0xff
	f.served[bad.Digest] = tampered
	// A second layer after the disk is checked too.
	late := f.layer(false, file("etc/motd", []byte("hello")))
	f.image("disks/tampered-late", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("disk/a.img", disk)), late)
	f.served[late.Digest] = bytes.Repeat([]byte{0}, int(late.Size))
	f.image("disks/zstd", "v1", registry.MediaTypeOCIManifest, registry.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+zstd", Digest: bad.Digest, Size: bad.Size})
	f.image("disks/bomb", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("disk/a.img", disk), file("padding", make([]byte, 5<<20))))
	arm := f.image("disks/arm", "", registry.MediaTypeOCIManifest, f.layer(true, file("disk/a.img", disk)))
	arm.Platform = &registry.Platform{OS: "linux", Architecture: "arm64"}
	f.manifest("disks/arm", "v1", registry.MediaTypeOCIIndex, registry.Index{SchemaVersion: 2, Manifests: []registry.Descriptor{arm}})

	small := &ImageReconciler{MaxImageSize: 2 << 20}
	for _, c := range []struct {
		image, want string
		permanent   bool
	}{
		{"disks/none:v1", "no file under /disk/", true},
		{"disks/two:v1", "more than one file under /disk/", true},
		{"disks/link:v1", "no regular file", true},
		{"disks/tampered:v1", "refused", true},
		{"disks/tampered-late:v1", "refused", true},
		{"disks/zstd:v1", "zstd", true},
		{"disks/bomb:v1", "unpack to more than", true},
		{"disks/arm:v1", "no linux/amd64 image (it has linux/arm64)", true},
		{"disks/tiny@" + registry.DigestOf([]byte("x")), "MANIFEST_UNKNOWN", false},
		{"disks/absent:v1", "404", false},
	} {
		t.Run(c.image, func(t *testing.T) {
			_, _, err := pull(t, small, ci(f.host()+"/"+c.image), "")
			if err == nil || !strings.Contains(err.Error(), c.want) || isPermanent(err) != c.permanent {
				t.Errorf("error %v (permanent %v), want one with %q (permanent %v)", err, isPermanent(err), c.want, c.permanent)
			}
		})
	}
}

// TestPullSizeCap: a disk larger than the cap is refused from its tar header, and layers
// that declare more than the cap from the manifest, before their bytes are read.
func TestPullSizeCap(t *testing.T) {
	f := newFakeRegistry(t, false)
	disk := rawDisk(3 << 20)
	f.image("disks/big", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("disk/big.img", disk)))
	f.image("disks/declared", "v1", registry.MediaTypeOCIManifest, registry.Descriptor{MediaType: registry.MediaTypeOCILayerGzip, Digest: registry.DigestOf([]byte("x")), Size: 1 << 40})
	r := &ImageReconciler{MaxImageSize: 2 << 20}
	for _, img := range []string{"disks/big:v1", "disks/declared:v1"} {
		if _, _, err := pull(t, r, ci(f.host()+"/"+img), ""); err == nil || !isPermanent(err) || !strings.Contains(err.Error(), "--max-image-size") {
			t.Errorf("%s: %v, want a permanent refusal naming --max-image-size", img, err)
		}
	}
}

func pullSecret(ns, name, registryHost, user, pass string) *corev1.Secret {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: fmt.Appendf(nil, `{"auths":{"http://%s/v1/":{"auth":%q}}}`, registryHost, auth)},
	}
}

func secretReconciler(t *testing.T, objs ...client.Object) *ImageReconciler {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return &ImageReconciler{Client: fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()}
}

// TestPullAuth: the token flow (a Bearer challenge, a token from its realm with the
// Secret's credentials) and Basic; without credentials, or with wrong ones, the pull
// fails and is tried again.
func TestPullAuth(t *testing.T) {
	for _, scheme := range []string{"bearer", "basic"} {
		t.Run(scheme, func(t *testing.T) {
			f := newFakeRegistry(t, false)
			f.auth, f.user, f.pass = scheme, "alice", "s3cret"
			disk := rawDisk(1 << 20)
			f.image("disks/tiny", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("disk/tiny.img", disk)))
			r := secretReconciler(t,
				pullSecret("tenant", "good", f.host(), "alice", "s3cret"),
				pullSecret("tenant", "wrong", f.host(), "alice", "guess"),
				pullSecret("tenant", "elsewhere", "registry.example.com", "alice", "s3cret"))
			src := ci(f.host() + "/disks/tiny:v1")
			src.ImagePullSecret = &v1alpha2.ImagePullSecretName{Name: "good", Namespace: "tenant"}
			got, _, err := pull(t, r, src, "")
			if err != nil || !bytes.Equal(got, disk) {
				t.Fatalf("with credentials: %d bytes, %v", len(got), err)
			}
			if scheme == "bearer" && f.tokens != 1 {
				t.Errorf("%d tokens issued for one pull, want 1 (the token is kept for the blobs)", f.tokens)
			}
			for name, want := range map[string]string{"": "asks for credentials", "wrong": "401", "elsewhere": "no credentials for " + f.host()} {
				src.ImagePullSecret = &v1alpha2.ImagePullSecretName{Name: name, Namespace: "tenant"}
				if _, _, err := pull(t, r, src, ""); err == nil || isPermanent(err) || !strings.Contains(err.Error(), want) {
					t.Errorf("secret %q: %v, want a retried error with %q", name, err, want)
				}
			}
		})
	}
}

// TestPullSecretNamespace: a ClusterVirtualImage names the Secret's namespace; a namespaced
// object reads only its own namespace's Secret.
func TestPullSecretNamespace(t *testing.T) {
	f := newFakeRegistry(t, false)
	f.image("disks/tiny", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("disk/tiny.img", rawDisk(1<<20))))
	r := secretReconciler(t, pullSecret("tenant", "creds", f.host(), "u", "p"), pullSecret("other", "creds", f.host(), "u", "p"))
	src := ci(f.host() + "/disks/tiny:v1")
	for _, c := range []struct {
		secretNS, objectNS, want string
	}{
		{"", "", "namespace is required"},
		{"other", "tenant", "reads a Secret of its own namespace only"},
		{"", "tenant", ""},
		{"tenant", "tenant", ""},
		{"other", "", ""},
	} {
		src.ImagePullSecret = &v1alpha2.ImagePullSecretName{Name: "creds", Namespace: c.secretNS}
		_, _, err := pull(t, r, src, c.objectNS)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !isPermanent(err) || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("secret namespace %q, object namespace %q: %v, want %q", c.secretNS, c.objectNS, err, c.want)
		}
	}
}

// TestPullTLS: a registry off loopback is reached over TLS, here with caBundle's CA; a
// caBundle that holds no certificate is refused.
func TestPullTLS(t *testing.T) {
	f := newFakeRegistry(t, true)
	disk := rawDisk(1 << 20)
	f.image("disks/tiny", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("disk/tiny.img", disk)))
	src := ci(f.host() + "/disks/tiny:v1")
	if _, _, err := pull(t, nil, src, ""); err == nil {
		t.Error("a loopback registry without caBundle is reached over plain HTTP: the TLS server must not answer it")
	}
	src.CABundle = pemCert(f.srv.Certificate().Raw)
	if got, _, err := pull(t, nil, src, ""); err != nil || !bytes.Equal(got, disk) {
		t.Errorf("with caBundle: %d bytes, %v", len(got), err)
	}
	src.CABundle = []byte("junk")
	if _, _, err := pull(t, nil, src, ""); err == nil || !isPermanent(err) || !strings.Contains(err.Error(), "containerImage.caBundle") {
		t.Errorf("junk caBundle: %v", err)
	}
}

// TestContainerImageIsImported: a ClusterVirtualImage of type ContainerImage gets Ready
// through the import's own checks, and one whose disk is no disk fails with them.
func TestContainerImageIsImported(t *testing.T) {
	f := newFakeRegistry(t, false)
	f.image("disks/tiny", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("disk/tiny.img", rawDisk(2<<20))))
	junk := make([]byte, 1<<20)
	copy(junk, "QFI\xfbnot really")
	f.image("disks/junk", "v1", registry.MediaTypeOCIManifest, f.layer(true, file("disk/junk.img", junk)))
	img := func(name, ref string) *v1alpha2.ClusterVirtualImage {
		return &v1alpha2.ClusterVirtualImage{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
			Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceContainerImage, ContainerImage: ci(f.host() + "/" + ref)}}}
	}
	e := newImageEnv(t, img("tiny", "disks/tiny:v1"), img("junk", "disks/junk:v1"))
	if got, _ := e.reconcile(t, "tiny"); got.Status.Phase != v1alpha2.ImageReady || got.Status.Format != FormatRaw || got.Status.Size.UnpackedBytes != "2097152" {
		t.Errorf("tiny: phase %s format %s size %+v: %s", got.Status.Phase, got.Status.Format, got.Status.Size, readyCondition(got))
	}
	if got, _ := e.reconcile(t, "junk"); got.Status.Phase != v1alpha2.ImageFailed || !strings.Contains(readyCondition(got), "qcow2") {
		t.Errorf("junk: phase %s: %s", got.Status.Phase, readyCondition(got))
	}
}

// TestPullFromFerrysRegistry: what `ferry registry push` writes, Ferry's registry serves
// and the pull reads back.
func TestPullFromFerrysRegistry(t *testing.T) {
	dir := t.TempDir()
	disk := rawDisk(2 << 20)
	src := filepath.Join(t.TempDir(), "tiny.img")
	if err := os.WriteFile(src, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := registry.Push(dir, src, "disks/tiny", "v1"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.Handler(dir))
	defer srv.Close()
	got, total, err := pull(t, nil, ci(strings.TrimPrefix(srv.URL, "http://")+"/disks/tiny:v1"), "")
	if err != nil || total != int64(len(disk)) || !bytes.Equal(got, disk) {
		t.Fatalf("pulled %d bytes (announced %d), %v; want the pushed %d", len(got), total, err, len(disk))
	}
}
