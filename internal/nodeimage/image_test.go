package nodeimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ociLayout is an image-layout tar read into memory.
type ociLayout map[string][]byte

func readLayout(t *testing.T, path string) ociLayout {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := ociLayout{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return l
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if _, dup := l[h.Name]; dup {
			t.Errorf("%s twice in the layout", h.Name)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		l[h.Name] = b
	}
}

// blob returns the blob d points at, checking its digest and size.
func (l ociLayout) blob(t *testing.T, d Descriptor) []byte {
	t.Helper()
	b, ok := l["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
	if !ok {
		t.Fatalf("no blob %s (%s) in the layout", d.Digest, d.MediaType)
	}
	sum := sha256.Sum256(b)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != d.Digest {
		t.Errorf("blob %s hashes to %s", d.Digest, got)
	}
	if int64(len(b)) != d.Size {
		t.Errorf("blob %s has %d bytes, its descriptor says %d", d.Digest, len(b), d.Size)
	}
	return b
}

func unmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

// image is what TestWrite reads back from a written layout.
type image struct {
	layout   ociLayout
	index    Index
	manifest Manifest
	config   Config
}

func readImage(t *testing.T, path string) image {
	t.Helper()
	var im image
	im.layout = readLayout(t, path)
	if got := string(im.layout["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", got)
	}
	unmarshal(t, im.layout["index.json"], &im.index)
	if im.index.SchemaVersion != 2 || im.index.MediaType != MediaTypeIndex || len(im.index.Manifests) != 1 {
		t.Fatalf("index.json: %s", im.layout["index.json"])
	}
	md := im.index.Manifests[0]
	if md.MediaType != MediaTypeManifest {
		t.Errorf("the index's manifest has media type %s", md.MediaType)
	}
	unmarshal(t, im.layout.blob(t, md), &im.manifest)
	if im.manifest.SchemaVersion != 2 || im.manifest.MediaType != MediaTypeManifest || im.manifest.Config.MediaType != MediaTypeConfig {
		t.Errorf("manifest: %+v", im.manifest)
	}
	unmarshal(t, im.layout.blob(t, im.manifest.Config), &im.config)
	if n := len(im.layout) - 2; n != 2+len(im.manifest.Layers) {
		t.Errorf("the layout holds %d blobs, the manifest names %d", n, 2+len(im.manifest.Layers))
	}
	return im
}

// Write's layout is one that an importer takes: index → manifest → config and layers,
// every digest and size right, the ref in both annotations, and the ferry layer holding
// the binary as /usr/local/bin/ferry and the ferry-agent and ferry-launcher beside it in
// /usr/local/bin (0755, root).
func TestWrite(t *testing.T) {
	_, base := fakeBase(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "ferry")
	binData := []byte("#!/bin/sh\necho ferry test binary\n" + strings.Repeat("x", 1000))
	if err := os.WriteFile(bin, binData, 0o600); err != nil {
		t.Fatal(err)
	}
	launcherData := []byte("#!/bin/sh\necho ferry-launcher test binary\n")
	if err := os.WriteFile(filepath.Join(dir, "ferry-launcher"), launcherData, 0o600); err != nil {
		t.Fatal(err)
	}
	agentData := []byte("#!/bin/sh\necho ferry-agent test binary\n")
	if err := os.WriteFile(filepath.Join(dir, "ferry-agent"), agentData, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "ferry.tar")
	if err := Write(t.Context(), out, "ferryvm/ferry:0.2.0", bin); err != nil {
		t.Fatal(err)
	}
	im := readImage(t, out)

	const ref = "docker.io/ferryvm/ferry:0.2.0"
	md := im.index.Manifests[0]
	if md.Annotations[AnnotationImageName] != ref || md.Annotations[AnnotationRefName] != ref {
		t.Errorf("the index's annotations are %v, want both names %s", md.Annotations, ref)
	}
	if md.Platform == nil || md.Platform.Architecture != "amd64" || md.Platform.OS != "linux" {
		t.Errorf("the index's platform is %+v", md.Platform)
	}
	if got, err := ImageName(out); err != nil || got != ref {
		t.Errorf("ImageName = %q, %v; want %s", got, err, ref)
	}

	c := im.config
	if c.Architecture != "amd64" || c.OS != "linux" {
		t.Errorf("config platform %s/%s", c.OS, c.Architecture)
	}
	if len(c.Config.Entrypoint) != 1 || c.Config.Entrypoint[0] != "ferry" {
		t.Errorf("entrypoint %q, want [ferry]", c.Config.Entrypoint)
	}
	if len(c.Config.Env) != 1 || !strings.HasPrefix(c.Config.Env[0], "PATH=") || !strings.Contains(c.Config.Env[0], ":/usr/local/bin:") {
		t.Errorf("env %q, want a PATH with /usr/local/bin", c.Config.Env)
	}

	layers := im.manifest.Layers
	if len(layers) != 2 {
		t.Fatalf("%d layers, want the base and ferry's", len(layers))
	}
	if c.RootFS.Type != "layers" || len(c.RootFS.DiffIDs) != 2 {
		t.Fatalf("rootfs %+v", c.RootFS)
	}
	for i, l := range layers {
		if l.MediaType != MediaTypeLayer {
			t.Errorf("layer %d has media type %s", i, l.MediaType)
		}
		// Uncompressed layers: the diffID is the digest.
		if c.RootFS.DiffIDs[i] != l.Digest {
			t.Errorf("layer %d: diffID %s, digest %s", i, c.RootFS.DiffIDs[i], l.Digest)
		}
	}
	if got := im.layout.blob(t, layers[0]); !bytes.Equal(got, base) {
		t.Error("the first layer is not the cached base layer")
	}

	tr := tar.NewReader(bytes.NewReader(im.layout.blob(t, layers[1])))
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s is owned by %d:%d", h.Name, h.Uid, h.Gid)
		}
		want := map[string][]byte{"usr/local/bin/ferry": binData, "usr/local/bin/ferry-agent": agentData, "usr/local/bin/ferry-launcher": launcherData}[h.Name]
		if want == nil {
			continue
		}
		if h.Typeflag != tar.TypeReg || h.Mode != 0o755 {
			t.Errorf("%s: type %c, mode %o; want a regular file, 0755", h.Name, h.Typeflag, h.Mode)
		}
		got, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not the binary", h.Name)
		}
	}
	if want := "usr/ usr/local/ usr/local/bin/ usr/local/bin/ferry usr/local/bin/ferry-agent usr/local/bin/ferry-launcher"; strings.Join(names, " ") != want {
		t.Errorf("the ferry layer holds %q, want %s", names, want)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "out", ".*")); len(leftovers) > 0 {
		t.Errorf("Write left %v", leftovers)
	}
}

// The same binary makes the same image (nothing in it depends on when it was written);
// another binary changes the ferry layer, and only it.
func TestWriteIsReproducible(t *testing.T) {
	fakeBase(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "ferry")
	for _, name := range []string{"ferry-agent", "ferry-launcher"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(data, name string) image {
		t.Helper()
		if err := os.WriteFile(bin, []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, name)
		if err := Write(t.Context(), out, "docker.io/ferryvm/ferry:test", bin); err != nil {
			t.Fatal(err)
		}
		return readImage(t, out)
	}
	a, b, c := write("one", "a.tar"), write("one", "b.tar"), write("two", "c.tar")
	if a.index.Manifests[0].Digest != b.index.Manifests[0].Digest {
		t.Error("the same binary made two manifests")
	}
	if a.manifest.Layers[0].Digest != c.manifest.Layers[0].Digest {
		t.Error("another binary changed the base layer")
	}
	if a.manifest.Layers[1].Digest == c.manifest.Layers[1].Digest {
		t.Error("another binary made the same ferry layer")
	}
}

func TestWriteRejectsBadInput(t *testing.T) {
	fakeBase(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "ferry")
	if err := os.WriteFile(bin, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ferry-agent", "ferry-launcher"} {
		if err := Write(t.Context(), filepath.Join(dir, "l.tar"), "ferryvm/ferry:1", bin); err == nil || !strings.Contains(err.Error(), "no "+name) {
			t.Errorf("Write without a %s beside ferry: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := Write(t.Context(), filepath.Join(dir, "a.tar"), "ferryvm/ferry", bin); err == nil {
		t.Error("Write took a reference without a tag")
	}
	if err := Write(t.Context(), filepath.Join(dir, "b.tar"), "ferryvm/ferry:1", filepath.Join(dir, "missing")); err == nil {
		t.Error("Write took a missing binary")
	}
	if err := Write(t.Context(), filepath.Join(dir, "c.tar"), "ferryvm/ferry:1", dir); err == nil {
		t.Error("Write took a directory as the binary")
	}
}

func TestNormalizeRef(t *testing.T) {
	for in, want := range map[string]string{
		"ferryvm/ferry:0.2.0":                      "docker.io/ferryvm/ferry:0.2.0",
		"docker.io/ferryvm/ferry:0.2.0":            "docker.io/ferryvm/ferry:0.2.0",
		"debian:12":                                "docker.io/library/debian:12",
		"localhost/ferry:dev":                      "localhost/ferry:dev",
		"localhost:5000/ferryvm/ferry:v1-rc":       "localhost:5000/ferryvm/ferry:v1-rc",
		"registry.example.com/a/b/c:79a7ffb-dirty": "registry.example.com/a/b/c:79a7ffb-dirty",
	} {
		got, err := NormalizeRef(in)
		if err != nil || got != want {
			t.Errorf("NormalizeRef(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ferryvm/ferry", "ferryvm/ferry:", "FerryVM/ferry:1", "ferryvm/ferry@sha256:" + strings.Repeat("0", 64), "localhost:5000/ferry", "ferryvm/ferry:-x"} {
		if got, err := NormalizeRef(in); err == nil {
			t.Errorf("NormalizeRef(%q) = %q, want an error", in, got)
		}
	}
}
