package registry

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"mime"
	"regexp"
	"strings"
)

// Media types of manifests, configs and layers.
const (
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIConfig      = "application/vnd.oci.image.config.v1+json"
	MediaTypeOCILayer       = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeOCILayerGzip   = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// ManifestAccept is the Accept header of a manifest request: every type Parse reads.
var ManifestAccept = strings.Join([]string{MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerList}, ", ")

// Limits on what a registry may send; past them a manifest is refused.
const (
	// MaxManifestSize is the size the distribution spec says registries should accept.
	MaxManifestSize = 4 << 20
	MaxLayers       = 256
	MaxIndexEntries = 1024
)

// Descriptor points at a blob or a manifest.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	URLs        []string          `json:"urls,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Platform is what an index entry runs on.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

func (p *Platform) String() string {
	if p == nil {
		return "no platform"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Manifest is an image manifest (OCI or Docker v2 schema 2).
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Index is a list of manifests, one per platform (OCI index or Docker manifest list).
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Manifests     []Descriptor `json:"manifests"`
}

// Parsed is a manifest or an index: one of the two is set.
type Parsed struct {
	Manifest *Manifest
	Index    *Index
}

// ParseManifest reads a manifest or an index. Its type is the mediaType the document
// states, else the Content-Type it was served with, else what its fields show; Docker's
// schema 1 and anything else are refused.
func ParseManifest(contentType string, body []byte) (Parsed, error) {
	if len(body) > MaxManifestSize {
		return Parsed{}, fmt.Errorf("the manifest is %d bytes, more than %d", len(body), MaxManifestSize)
	}
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Layers        json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return Parsed{}, fmt.Errorf("the manifest is no JSON document: %w", err)
	}
	mt := probe.MediaType
	if mt == "" {
		mt, _, _ = mime.ParseMediaType(contentType)
	}
	switch mt {
	case MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerList:
	case "", "application/json", "application/octet-stream":
		// An OCI document may leave mediaType out, and a server may not say either.
		if probe.Manifests != nil {
			mt = MediaTypeOCIIndex
		} else {
			mt = MediaTypeOCIManifest
		}
	default:
		if strings.HasPrefix(mt, "application/vnd.docker.distribution.manifest.v1") {
			return Parsed{}, fmt.Errorf("the image has a Docker schema 1 manifest, which is not supported: push it again with a current tool")
		}
		return Parsed{}, fmt.Errorf("the manifest's media type %q is not an image manifest or index", mt)
	}
	if probe.SchemaVersion != 2 {
		return Parsed{}, fmt.Errorf("the manifest's schemaVersion is %d, not 2", probe.SchemaVersion)
	}
	if mt == MediaTypeOCIIndex || mt == MediaTypeDockerList {
		var ix Index
		if err := json.Unmarshal(body, &ix); err != nil {
			return Parsed{}, fmt.Errorf("reading the index: %w", err)
		}
		ix.MediaType = mt
		if len(ix.Manifests) == 0 || len(ix.Manifests) > MaxIndexEntries {
			return Parsed{}, fmt.Errorf("the index lists %d manifests (1 to %d expected)", len(ix.Manifests), MaxIndexEntries)
		}
		for i := range ix.Manifests {
			if err := ix.Manifests[i].check(); err != nil {
				return Parsed{}, fmt.Errorf("index entry %d: %w", i, err)
			}
		}
		return Parsed{Index: &ix}, nil
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return Parsed{}, fmt.Errorf("reading the manifest: %w", err)
	}
	m.MediaType = mt
	if len(m.Layers) == 0 || len(m.Layers) > MaxLayers {
		return Parsed{}, fmt.Errorf("the manifest lists %d layers (1 to %d expected)", len(m.Layers), MaxLayers)
	}
	for i := range m.Layers {
		if err := m.Layers[i].check(); err != nil {
			return Parsed{}, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return Parsed{Manifest: &m}, nil
}

// check refuses a descriptor without a digest Ferry can verify or with a negative size,
// and writes its digest's hex in lowercase.
func (d *Descriptor) check() error {
	digest, err := ParseDigest(d.Digest)
	if err != nil {
		return err
	}
	d.Digest = digest
	if d.Size < 0 {
		return fmt.Errorf("size %d is negative", d.Size)
	}
	return nil
}

// Select picks the index entry for os/arch: the one whose platform matches, else the only
// entry when no entry names a platform.
func (ix *Index) Select(os, arch string) (Descriptor, error) {
	var seen []string
	for _, d := range ix.Manifests {
		if d.Platform != nil && d.Platform.OS == os && d.Platform.Architecture == arch {
			if d.MediaType != "" && d.MediaType != MediaTypeOCIManifest && d.MediaType != MediaTypeDockerManifest {
				return Descriptor{}, fmt.Errorf("the index's %s/%s entry is a %s, not an image manifest", os, arch, d.MediaType)
			}
			return d, nil
		}
		seen = append(seen, d.Platform.String())
	}
	if len(ix.Manifests) == 1 && ix.Manifests[0].Platform == nil {
		return ix.Manifests[0], nil
	}
	return Descriptor{}, fmt.Errorf("the index has no %s/%s image (it has %s)", os, arch, strings.Join(seen, ", "))
}

var digestRE = regexp.MustCompile(`^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$`)

// ParseDigest checks a digest of an algorithm Ferry can verify (sha256, sha512) and
// returns it with its hex in lowercase.
func ParseDigest(s string) (string, error) {
	alg, hexPart, _ := strings.Cut(s, ":")
	d := alg + ":" + strings.ToLower(hexPart)
	if !digestRE.MatchString(d) {
		return "", fmt.Errorf("digest %q is not sha256:<64 hex> or sha512:<128 hex>", s)
	}
	return d, nil
}

// Digester hashes bytes for the digest's algorithm (the digest has passed ParseDigest).
func Digester(digest string) hash.Hash {
	if strings.HasPrefix(digest, "sha512:") {
		return sha512.New()
	}
	return sha256.New()
}

// DigestOf is the sha256 digest of b.
func DigestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Sum is the digest of what h hashed, written as digest's algorithm.
func Sum(digest string, h hash.Hash) string {
	alg, _, _ := strings.Cut(digest, ":")
	return alg + ":" + hex.EncodeToString(h.Sum(nil))
}
