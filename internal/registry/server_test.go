package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func get(t *testing.T, srv *httptest.Server, method, path string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestPushAndServe: Push writes a disk file as a one-layer containerDisk image, and the
// registry serves it by tag and digest, as a pull reads it: manifest, config, layer.
func TestPushAndServe(t *testing.T) {
	dir := t.TempDir()
	disk := bytes.Repeat([]byte("disk"), 300_000)
	file := filepath.Join(t.TempDir(), "tiny.qcow2")
	if err := os.WriteFile(file, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	desc, err := Push(dir, file, "disks/tiny", "v1")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(dir))
	defer srv.Close()

	if resp, _ := get(t, srv, "GET", "/v2/"); resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("/v2/: %s %v", resp.Status, resp.Header)
	}
	resp, body := get(t, srv, "GET", "/v2/disks/tiny/manifests/v1")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != MediaTypeOCIManifest || DigestOf(body) != desc.Digest || resp.Header.Get("Docker-Content-Digest") != desc.Digest {
		t.Fatalf("manifest by tag: %s %v, digest %s, pushed %s", resp.Status, resp.Header, DigestOf(body), desc.Digest)
	}
	if resp, b := get(t, srv, "GET", "/v2/disks/tiny/manifests/"+desc.Digest); resp.StatusCode != 200 || !bytes.Equal(b, body) {
		t.Errorf("manifest by digest: %s", resp.Status)
	}
	if resp, b := get(t, srv, "HEAD", "/v2/disks/tiny/manifests/v1"); resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != int64(len(body)) {
		t.Errorf("HEAD manifest: %s, %d bytes, length %d", resp.Status, len(b), resp.ContentLength)
	}
	p, err := ParseManifest(resp.Header.Get("Content-Type"), body)
	if err != nil || p.Manifest == nil || len(p.Manifest.Layers) != 1 {
		t.Fatalf("the manifest: %+v, %v", p, err)
	}
	blob := func(d Descriptor) []byte {
		resp, b := get(t, srv, "GET", "/v2/disks/tiny/blobs/"+d.Digest)
		if resp.StatusCode != 200 || DigestOf(b) != d.Digest || int64(len(b)) != d.Size {
			t.Fatalf("blob %s: %s, %d bytes of digest %s", d.Digest, resp.Status, len(b), DigestOf(b))
		}
		return b
	}
	var config struct {
		Architecture, OS string
		RootFS           struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blob(p.Manifest.Config), &config); err != nil || config.Architecture != "amd64" || config.OS != "linux" || len(config.RootFS.DiffIDs) != 1 {
		t.Fatalf("config: %+v, %v", config, err)
	}
	l := p.Manifest.Layers[0]
	if l.MediaType != MediaTypeOCILayerGzip {
		t.Errorf("layer media type %s", l.MediaType)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(l)))
	if err != nil {
		t.Fatal(err)
	}
	unpacked, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(unpacked); "sha256:"+hex.EncodeToString(sum[:]) != config.RootFS.DiffIDs[0] {
		t.Error("the config's diff_id is not the digest of the unpacked layer")
	}
	tr := tar.NewReader(bytes.NewReader(unpacked))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "disk/tiny.qcow2" {
			b, _ := io.ReadAll(tr)
			if !bytes.Equal(b, disk) || h.Uid != 107 || h.Typeflag != tar.TypeReg {
				t.Errorf("disk/tiny.qcow2: %d bytes, uid %d, type %q", len(b), h.Uid, h.Typeflag)
			}
		}
	}
	if strings.Join(names, ",") != "disk/,disk/tiny.qcow2" {
		t.Errorf("layer entries %v, want disk/ and disk/tiny.qcow2", names)
	}
	if resp, b := get(t, srv, "GET", "/v2/disks/tiny/tags/list"); resp.StatusCode != 200 || string(b) != `{"name":"disks/tiny","tags":["v1"]}` {
		t.Errorf("tags: %s %s", resp.Status, b)
	}
}

// TestRegistryRefuses: the registry writes nothing, and serves nothing but its blobs and
// the manifests its index names for the repository asked.
func TestRegistryRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "a.img")
	if err := os.WriteFile(file, []byte("a disk"), 0o644); err != nil {
		t.Fatal(err)
	}
	desc, err := Push(dir, file, "disks/a", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(dir))
	defer srv.Close()
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"PUT", "/v2/disks/a/manifests/v2", 405},
		{"POST", "/v2/disks/a/blobs/uploads/", 405},
		{"DELETE", "/v2/disks/a/manifests/v1", 405},
		{"GET", "/v2/disks/a/manifests/v2", 404},
		{"GET", "/v2/disks/b/manifests/v1", 404},
		{"GET", "/v2/disks/b/manifests/" + desc.Digest, 404},
		{"GET", "/v2/disks/a/blobs/sha256:" + strings.Repeat("0", 64), 404},
		{"GET", "/v2/disks/a/blobs/sha256:../../secret", 404},
		{"GET", "/v2/disks/a/blobs/..%2f..%2fsecret", 404},
		{"GET", "/v2/../secret", 404},
		{"GET", "/secret", 404},
		{"GET", "/v2/Disks/a/manifests/v1", 404},
	} {
		if resp, b := get(t, srv, c.method, c.path); resp.StatusCode != c.status || !strings.Contains(string(b), `"errors"`) {
			t.Errorf("%s %s: %s %s, want %d with an error body", c.method, c.path, resp.Status, b, c.status)
		}
	}
}

// TestPushReplacesTheTag: a second push of a tag names the new image; other tags stay.
func TestPushReplacesTheTag(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) string {
		f := filepath.Join(t.TempDir(), "d.img")
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	first, err := Push(dir, write("one"), "d", "v1")
	if err != nil {
		t.Fatal(err)
	}
	keep, err := Push(dir, write("two"), "d", "stable")
	if err != nil {
		t.Fatal(err)
	}
	second, err := Push(dir, write("three"), "d", "v1")
	if err != nil {
		t.Fatal(err)
	}
	ix, err := readIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := lookup(ix, "d", "v1"); !ok || d.Digest != second.Digest || d.Digest == first.Digest {
		t.Errorf("d:v1 is %s, want the second push's %s", d.Digest, second.Digest)
	}
	if d, ok := lookup(ix, "d", "stable"); !ok || d.Digest != keep.Digest {
		t.Errorf("d:stable is %s, want %s", d.Digest, keep.Digest)
	}
	if len(ix.Manifests) != 2 {
		t.Errorf("index has %d entries, want 2", len(ix.Manifests))
	}
	for _, bad := range [][2]string{{"D", "v1"}, {"d/../e", "v1"}, {"d", "-x"}, {"d", ""}} {
		if _, err := Push(dir, write("x"), bad[0], bad[1]); err == nil {
			t.Errorf("Push as %s:%s succeeded", bad[0], bad[1])
		}
	}
	if _, err := Push(dir, t.TempDir(), "d", "dir"); err == nil {
		t.Error("a directory was pushed as a disk")
	}
}
