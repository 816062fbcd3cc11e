package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The registry's directory is an OCI image layout (image-spec's image-layout.md): the file
// oci-layout, blobs/<alg>/<hex>, and index.json, whose entries name their image by the
// annotation org.opencontainers.image.ref.name as repository:tag.
const (
	layoutFile   = "oci-layout"
	indexFile    = "index.json"
	blobsDir     = "blobs"
	lockFile     = ".lock"
	RefNameAnnot = "org.opencontainers.image.ref.name"
)

// blobPath is where a blob of a checked digest (ParseDigest) is kept.
func blobPath(dir, digest string) string {
	alg, hexPart, _ := strings.Cut(digest, ":")
	return filepath.Join(dir, blobsDir, alg, hexPart)
}

// readIndex reads the layout's index.json; a directory with none is empty.
func readIndex(dir string) (Index, error) {
	b, err := os.ReadFile(filepath.Join(dir, indexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Index{SchemaVersion: 2, MediaType: MediaTypeOCIIndex}, nil
	}
	if err != nil {
		return Index{}, err
	}
	var ix Index
	if err := json.Unmarshal(b, &ix); err != nil {
		return Index{}, fmt.Errorf("%s: %w", filepath.Join(dir, indexFile), err)
	}
	return ix, nil
}

// lookup finds the manifest of repo at ref (a tag or a digest) in the layout's index.
func lookup(ix Index, repo, ref string) (Descriptor, bool) {
	for _, d := range ix.Manifests {
		r, tag, _ := strings.Cut(d.Annotations[RefNameAnnot], ":")
		if r == repo && (tag == ref || d.Digest == ref) {
			return d, true
		}
	}
	return Descriptor{}, false
}

// locked runs f with the layout's lock held: pushes to one directory take turns.
func locked(dir string, f func() error) error {
	l, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer l.Close()
	if err := syscall.Flock(int(l.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(l.Fd()), syscall.LOCK_UN)
	return f()
}

// writeFileAtomic replaces path with b through a temporary file in its directory, so a
// reader sees the old content or the new, never half of it.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
