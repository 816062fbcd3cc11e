package nodeimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The script names its layer after the SHA-256 of its own file (sha256sum "$0"), and
// EnsureBase looks for the name computed from the embedded bytes: `make node-image`
// (which runs the embedded copy) and a hand run of the file must agree.
func TestBaseNameMatchesTheScriptFile(t *testing.T) {
	b, err := os.ReadFile("build-node-base.sh")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	want := "node-base-" + hex.EncodeToString(sum[:])[:12]
	if got := BaseName(); got != want {
		t.Errorf("BaseName() = %s, the script file names it %s", got, want)
	}
}

// fakeBase puts a small base layer (a tar with /etc/os-release) in a temp cache, as the
// script would: no root, no network.
func fakeBase(t *testing.T) (dir string, layer []byte) {
	t.Helper()
	dir = t.TempDir()
	t.Setenv("FERRY_IMAGE_CACHE", dir)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data string
	}{{"etc/", ""}, {"etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"}} {
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}
		if strings.HasSuffix(f.name, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer = buf.Bytes()
	sum := sha256.Sum256(layer)
	d := "sha256:" + hex.EncodeToString(sum[:])
	desc := fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d,"diffID":%q}`, d, len(layer), d)
	if err := os.WriteFile(filepath.Join(dir, BaseName()+".tar"), layer, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, BaseName()+".json"), []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, layer
}

// A cached layer is returned as it is: no build, no root, no network.
func TestEnsureBaseReusesTheCache(t *testing.T) {
	dir, _ := fakeBase(t)
	got, err := EnsureBase(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, BaseName()+".tar"); got != want {
		t.Errorf("EnsureBase = %s, want the cached %s", got, want)
	}
}

// A layer without its descriptor, or one whose size is not the descriptor's, is not a
// finished build: EnsureBase would build again rather than use it.
func TestHalfBuiltBaseIsNotUsed(t *testing.T) {
	dir, layer := fakeBase(t)
	if _, err := readBase(dir); err != nil {
		t.Fatalf("the complete fake base: %v", err)
	}
	tarPath := filepath.Join(dir, BaseName()+".tar")
	if err := os.WriteFile(tarPath, layer[:len(layer)-512], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readBase(dir); err == nil {
		t.Error("a truncated layer was taken as built")
	}
	if err := os.WriteFile(tarPath, layer, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, BaseName()+".json")); err != nil {
		t.Fatal(err)
	}
	if _, err := readBase(dir); err == nil {
		t.Error("a layer without its descriptor was taken as built")
	}
}
