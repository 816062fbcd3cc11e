package nodeimage

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// The OCI image-spec media types and annotations this package writes.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"

	// AnnotationRefName is the OCI layout's name for a manifest in index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is the name `ctr images import` gives the image (it wins over
	// AnnotationRefName, which ctr would otherwise take as it is).
	AnnotationImageName = "io.containerd.image.name"
)

// FerryPath is where the image holds the ferry binary; the entrypoint finds it on PATH.
// AgentPath is ferry-agent's, the command of the agent DaemonSet; LauncherPath is
// ferry-launcher's, the command of launcher pods.
const (
	FerryPath    = "/usr/local/bin/ferry"
	AgentPath    = "/usr/local/bin/ferry-agent"
	LauncherPath = "/usr/local/bin/ferry-launcher"
)

// DefaultPath is the image's PATH: Debian's, as debian:12-slim sets it.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Platform is a descriptor's platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Index is an OCI layout's index.json.
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Config is an OCI image configuration, with what this image needs of it.
type Config struct {
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Config       ContainerConfig `json:"config"`
	RootFS       RootFS          `json:"rootfs"`
	History      []History       `json:"history,omitempty"`
}

// ContainerConfig is the image's defaults for a container.
type ContainerConfig struct {
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	Env        []string          `json:"Env,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

// RootFS lists the layers' uncompressed digests, bottom first.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// History says what made each layer.
type History struct {
	CreatedBy string `json:"created_by,omitempty"`
	Comment   string `json:"comment,omitempty"`
}

// Write writes out, an OCI image-layout tar that `ctr images import` loads as ref: the
// cached base layer (EnsureBase; it is built first when missing, silently: call
// EnsureBase first to see its progress) and a layer holding ferryBinary as
// /usr/local/bin/ferry and the ferry-agent and ferry-launcher beside it (make build) in
// /usr/local/bin (0755, root), with the entrypoint ferry. ref is normalized as
// the Kubernetes node's runtime will look it up ("ferryvm/ferry:0.2.0" is
// "docker.io/ferryvm/ferry:0.2.0") and must have a tag; prefer one other than latest,
// which kubelet always tries to pull. out is replaced atomically. Only the ferry layer
// is hashed: the base layer's digest is read from the cache.
func Write(ctx context.Context, out, ref, ferryBinary string) error {
	basePath, err := EnsureBase(ctx, nil)
	if err != nil {
		return err
	}
	base, err := readBase(filepath.Dir(basePath))
	if err != nil {
		return err
	}
	files := []layerFile{{ferryBinary, FerryPath}}
	for _, path := range []string{AgentPath, LauncherPath} {
		src := filepath.Join(filepath.Dir(ferryBinary), filepath.Base(path))
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("no %s beside %s (make build builds it): %w", filepath.Base(path), ferryBinary, err)
		}
		files = append(files, layerFile{src, path})
	}
	return write(ctx, out, ref, files, []string{"ferry"}, basePath, &base)
}

// layerFile is a file of the image's own layer: src, on this machine, at path.
type layerFile struct{ src, path string }

// WritePause writes out, an OCI image-layout tar of the pods' sandbox image ref: one
// layer holding the static binary as /pause, its entrypoint; no base.
func WritePause(ctx context.Context, out, ref, binary string) error {
	return write(ctx, out, ref, []layerFile{{binary, "/pause"}}, []string{"/pause"}, "", nil)
}

// write writes the image: the base layer (if base is not nil, from basePath) and a layer
// with the files.
func write(ctx context.Context, out, ref string, files []layerFile, entrypoint []string, basePath string, base *baseLayer) error {
	name, err := NormalizeRef(ref)
	if err != nil {
		return err
	}
	var bins []layerBinary
	for _, f := range files {
		bin, err := os.Open(f.src)
		if err != nil {
			return err
		}
		defer bin.Close()
		fi, err := bin.Stat()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", f.src)
		}
		bins = append(bins, layerBinary{path: f.path, f: bin, size: fi.Size()})
	}
	// First pass: the ferry layer's digest and size (it is written in the second).
	h := sha256.New()
	n, err := writeFerryLayer(&countingWriter{w: h}, bins)
	if err != nil {
		return fmt.Errorf("hashing the ferry layer: %v", err)
	}
	ferryLayer := Descriptor{MediaType: MediaTypeLayer, Digest: digestOf(h), Size: n}
	if err := ctx.Err(); err != nil {
		return err
	}

	cfg := Config{
		Architecture: "amd64",
		OS:           "linux",
		Config: ContainerConfig{
			Entrypoint: entrypoint,
			Env:        []string{DefaultPath},
		},
		RootFS: RootFS{Type: "layers"},
	}
	var layers []Descriptor
	if base != nil {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, base.DiffID)
		cfg.History = append(cfg.History, History{CreatedBy: "debootstrap --variant=minbase bookworm; apt-get install --no-install-recommends qemu-system-x86 qemu-utils ovmf ca-certificates", Comment: BaseName()})
		layers = append(layers, Descriptor{MediaType: base.MediaType, Digest: base.Digest, Size: base.Size})
	}
	cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, ferryLayer.Digest)
	copied := "COPY"
	for _, f := range files {
		copied += " " + filepath.Base(f.src)
	}
	if len(files) == 1 {
		copied += " " + files[0].path
	} else {
		copied += " " + filepath.Dir(files[0].path) + "/"
	}
	cfg.History = append(cfg.History, History{CreatedBy: copied})
	layers = append(layers, ferryLayer)
	cfgJSON, cfgDesc, err := blob(MediaTypeConfig, cfg)
	if err != nil {
		return err
	}
	man := Manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        cfgDesc,
		Layers:        layers,
	}
	manJSON, manDesc, err := blob(MediaTypeManifest, man)
	if err != nil {
		return err
	}
	manDesc.Platform = &Platform{Architecture: "amd64", OS: "linux"}
	manDesc.Annotations = map[string]string{AnnotationRefName: name, AnnotationImageName: name}
	idxJSON, err := json.Marshal(Index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{manDesc}})
	if err != nil {
		return err
	}

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	tw := tar.NewWriter(f)
	// index.json first: Import reads the ref from it without going through the blobs.
	if err := addFile(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := addFile(tw, "index.json", idxJSON); err != nil {
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch, Format: tar.FormatUSTAR}); err != nil {
			return err
		}
	}
	if err := addFile(tw, blobPath(cfgDesc.Digest), cfgJSON); err != nil {
		return err
	}
	if err := addFile(tw, blobPath(manDesc.Digest), manJSON); err != nil {
		return err
	}
	if base != nil {
		// The base layer, copied as it is.
		bf, err := os.Open(basePath)
		if err != nil {
			return err
		}
		defer bf.Close()
		if err := tw.WriteHeader(blobHeader(base.Digest, base.Size)); err != nil {
			return err
		}
		if _, err := io.Copy(tw, ctxReader{ctx, bf}); err != nil {
			return fmt.Errorf("copying the base layer %s: %v", basePath, err)
		}
	}
	// The ferry layer, made again: it must come out as hashed.
	if err := tw.WriteHeader(blobHeader(ferryLayer.Digest, ferryLayer.Size)); err != nil {
		return err
	}
	h.Reset()
	if _, err := writeFerryLayer(io.MultiWriter(tw, h), bins); err != nil {
		return fmt.Errorf("writing the ferry layer: %v", err)
	}
	if got := digestOf(h); got != ferryLayer.Digest {
		return fmt.Errorf("%s changed while the image was written", files[0].src)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return err
	}
	done = true
	return nil
}

// epoch is every file's time in the ferry layer and the layout's own files: the same
// binary makes the same layer, which the node's runtime then has already.
var epoch = time.Unix(0, 0)

// layerBinary is a binary of the ferry layer, at path in the image.
type layerBinary struct {
	path string
	f    *os.File
	size int64
}

// writeFerryLayer writes the binaries' layer's tar to w: each binary at its path (e.g.
// usr/local/bin/ferry) and their directories, root-owned, and returns the bytes written.
func writeFerryLayer(w io.Writer, bins []layerBinary) (int64, error) {
	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	written := map[string]bool{}
	for _, b := range bins {
		rel := strings.TrimPrefix(b.path, "/")
		var dirs []string
		for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
			dirs = append([]string{d + "/"}, dirs...)
		}
		for _, d := range dirs {
			if written[d] {
				continue
			}
			written[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch,
				Uname: "root", Gname: "root", Format: tar.FormatUSTAR}); err != nil {
				return cw.n, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o755,
			Size: b.size, ModTime: epoch, Uname: "root", Gname: "root", Format: tar.FormatUSTAR}); err != nil {
			return cw.n, err
		}
		if n, err := io.Copy(tw, io.NewSectionReader(b.f, 0, b.size)); err != nil {
			return cw.n, err
		} else if n != b.size {
			return cw.n, fmt.Errorf("read %d bytes of %s, expected %d", n, b.f.Name(), b.size)
		}
	}
	err := tw.Close()
	return cw.n, err
}

func blob(mediaType string, v any) ([]byte, Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, Descriptor{}, err
	}
	sum := sha256.Sum256(b)
	return b, Descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(b))}, nil
}

func blobPath(digest string) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
}

func blobHeader(digest string, size int64) *tar.Header {
	return &tar.Header{Typeflag: tar.TypeReg, Name: blobPath(digest), Mode: 0o644, Size: size, ModTime: epoch, Format: tar.FormatUSTAR}
}

func addFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatUSTAR}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func digestOf(h interface{ Sum([]byte) []byte }) string {
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

var (
	tagRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	pathRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?$`)
)

// NormalizeRef returns ref as a Kubernetes node's container runtime names it: with the
// registry (docker.io when the first component is not a host) and, on docker.io, the
// library/ namespace for a one-component name. A tag is required; digests are not
// accepted (the image is named before its manifest exists).
func NormalizeRef(ref string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("image reference %q: %s (e.g. docker.io/ferryvm/ferry:0.2.0)", ref, why)
	}
	if strings.Contains(ref, "@") {
		return bad("a digest cannot name an image being written")
	}
	repo, tag := ref, ""
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		repo, tag = ref[:i], ref[i+1:]
	}
	if tag == "" {
		return bad("no tag")
	}
	if !tagRE.MatchString(tag) {
		return bad("invalid tag")
	}
	host, path := "docker.io", repo
	if first, rest, ok := strings.Cut(repo, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		host, path = first, rest
	}
	if !hostRE.MatchString(host) {
		return bad("invalid registry host")
	}
	if !pathRE.MatchString(path) {
		return bad("invalid repository name")
	}
	if host == "docker.io" && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	return host + "/" + path + ":" + tag, nil
}
