package registry

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// diskOwner is the owner of the disk file in the image, as KubeVirt's containerDisk
// documentation builds them (ADD --chown=107:107): QEMU's user in KubeVirt's launcher.
const diskOwner = 107

// Push writes file into the layout in dir as the image repo:tag: one gzip layer holding
// disk/<the file's name>, as Deckhouse's guide builds one (FROM scratch, COPY x /disk/x),
// a config for linux/amd64, and an OCI manifest, named in index.json (an older image of
// the same name loses the name; its blobs stay). It returns the manifest's descriptor.
func Push(dir, file, repo, tag string) (Descriptor, error) {
	if err := CheckRepository(repo); err != nil {
		return Descriptor{}, err
	}
	if err := CheckTag(tag); err != nil {
		return Descriptor{}, err
	}
	src, err := os.Open(file)
	if err != nil {
		return Descriptor{}, err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return Descriptor{}, err
	}
	if !fi.Mode().IsRegular() {
		return Descriptor{}, fmt.Errorf("%s is not a regular file", file)
	}
	if err := os.MkdirAll(filepath.Join(dir, blobsDir, "sha256"), 0o755); err != nil {
		return Descriptor{}, err
	}
	if err := writeFileAtomic(filepath.Join(dir, layoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return Descriptor{}, err
	}
	layer, diffID, err := writeLayer(dir, src, filepath.Base(file), fi.Size())
	if err != nil {
		return Descriptor{}, err
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	if err != nil {
		return Descriptor{}, err
	}
	configDesc, err := writeBlob(dir, MediaTypeOCIConfig, config)
	if err != nil {
		return Descriptor{}, err
	}
	manifest, err := json.Marshal(Manifest{SchemaVersion: 2, MediaType: MediaTypeOCIManifest, Config: configDesc, Layers: []Descriptor{layer}})
	if err != nil {
		return Descriptor{}, err
	}
	desc, err := writeBlob(dir, MediaTypeOCIManifest, manifest)
	if err != nil {
		return Descriptor{}, err
	}
	desc.Annotations = map[string]string{RefNameAnnot: repo + ":" + tag}
	return desc, locked(dir, func() error {
		ix, err := readIndex(dir)
		if err != nil {
			return err
		}
		ix.SchemaVersion, ix.MediaType = 2, MediaTypeOCIIndex
		ix.Manifests = slices.DeleteFunc(ix.Manifests, func(d Descriptor) bool { return d.Annotations[RefNameAnnot] == repo+":"+tag })
		ix.Manifests = append(ix.Manifests, desc)
		b, err := json.MarshalIndent(ix, "", "  ")
		if err != nil {
			return err
		}
		return writeFileAtomic(filepath.Join(dir, indexFile), b)
	})
}

// writeLayer writes the gzip tar of disk/<name> as a blob; it returns the layer's
// descriptor and the digest of the uncompressed tar (the config's diff_id).
func writeLayer(dir string, src io.Reader, name string, size int64) (Descriptor, string, error) {
	tmp, err := os.CreateTemp(filepath.Join(dir, blobsDir), ".layer-*")
	if err != nil {
		return Descriptor{}, "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	compressed, uncompressed := sha256.New(), sha256.New()
	counter := &countingWriter{w: io.MultiWriter(tmp, compressed)}
	gz, err := gzip.NewWriterLevel(counter, gzip.BestSpeed)
	if err != nil {
		return Descriptor{}, "", err
	}
	tw := tar.NewWriter(io.MultiWriter(gz, uncompressed))
	var epoch time.Time
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "disk/", Mode: 0o555, Uid: diskOwner, Gid: diskOwner, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return Descriptor{}, "", err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "disk/" + name, Size: size, Mode: 0o444, Uid: diskOwner, Gid: diskOwner, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return Descriptor{}, "", err
	}
	if n, err := io.Copy(tw, src); err != nil {
		return Descriptor{}, "", fmt.Errorf("reading the disk file after %d bytes: %w", n, err)
	}
	if err := tw.Close(); err != nil {
		return Descriptor{}, "", err
	}
	if err := gz.Close(); err != nil {
		return Descriptor{}, "", err
	}
	if err := tmp.Close(); err != nil {
		return Descriptor{}, "", err
	}
	d := Descriptor{MediaType: MediaTypeOCILayerGzip, Digest: Sum("sha256:", compressed), Size: counter.n}
	if err := os.Rename(tmp.Name(), blobPath(dir, d.Digest)); err != nil {
		return Descriptor{}, "", err
	}
	return d, Sum("sha256:", uncompressed), nil
}

// writeBlob stores b as a blob of the layout.
func writeBlob(dir, mediaType string, b []byte) (Descriptor, error) {
	d := Descriptor{MediaType: mediaType, Digest: DigestOf(b), Size: int64(len(b))}
	return d, writeFileAtomic(blobPath(dir, d.Digest), b)
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
