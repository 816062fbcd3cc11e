package storage

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/netguard"
	"github.com/ferryvm/ferry/internal/registry"
)

// A ContainerImage source is pulled as KubeVirt's containerDisk is read: the image's
// layers (tar, gzip or not) hold one regular file directly under disk/, the disk. Its
// bytes are streamed to the import as they arrive; the format checks of every import
// apply to them. The stream ends (EOF) only once every layer has been read to its end and
// its digest checked, and no second file under disk/ was found: an image that fails either
// fails the import although the disk's bytes were already written.
//
// Rules of the pull: TLS, with the system's CAs and caBundle's, except for a registry on
// loopback without caBundle (plain HTTP: `ferry up`'s registry); credentials from the
// imagePullSecret only for the registry the Secret names them for; for an image index, the
// linux/amd64 image; every manifest and blob checked against its digest; the manifest at
// most registry.MaxManifestSize, the layers as declared at most the import's size cap plus
// slack(), and their unpacked tar streams too.

// layerSlack is what an image's layers may hold besides the disk (tar headers, a config
// file or two): as much as the size cap again, at most this.
const layerSlack = 64 << 20

// platformOS and platformArch pick an image index's entry: Ferry's guests are x86-64.
const (
	platformOS   = "linux"
	platformArch = "amd64"
)

// openContainerImage starts pulling the disk of a ContainerImage source; namespace is the
// image's or disk's own ("" for a ClusterVirtualImage), the only one whose Secret a
// namespaced object may read. It returns the disk file's stream and its length.
func (im importer) openContainerImage(ctx context.Context, src *v1alpha2.ContainerImageSource, namespace string) (io.ReadCloser, int64, error) {
	if src == nil {
		return nil, 0, permanent("dataSource.containerImage is required when type is ContainerImage")
	}
	ref, err := registry.ParseReference(src.Image)
	if err != nil {
		return nil, 0, permanent("dataSource.containerImage.image: %w", err)
	}
	creds, err := im.pullCredentials(ctx, src.ImagePullSecret, namespace, ref.Registry)
	if err != nil {
		return nil, 0, err
	}
	maxSize := im.maxSize
	if maxSize <= 0 {
		maxSize = DefaultMaxImageSize
	}
	p, err := newPuller(ref, src.CABundle, creds, maxSize, im.guard)
	if err != nil {
		return nil, 0, err
	}
	m, err := p.manifest(ctx)
	if err != nil {
		return nil, 0, err
	}
	return p.openDisk(ctx, m.Layers)
}

// pullCredentials reads the credentials an imagePullSecret holds for a registry (nil: pull
// anonymously). A Secret that is missing or unreadable is tried again: it may be fixed
// without touching the image.
func (im importer) pullCredentials(ctx context.Context, ps *v1alpha2.ImagePullSecretName, namespace, reg string) (*registry.Credentials, error) {
	if ps == nil || ps.Name == "" {
		return nil, nil
	}
	ns := ps.Namespace
	switch {
	case namespace != "" && ns != "" && ns != namespace:
		return nil, permanent("dataSource.containerImage.imagePullSecret.namespace is %s: an object of namespace %s reads a Secret of its own namespace only", ns, namespace)
	case namespace != "":
		ns = namespace
	case ns == "":
		return nil, permanent("dataSource.containerImage.imagePullSecret.namespace is required for a ClusterVirtualImage")
	}
	reader := im.apiReader
	if reader == nil {
		reader = im.client
	}
	// Read past the cache: the controller watches no Secret for this.
	var sec corev1.Secret
	if err := reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: ps.Name}, &sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("the imagePullSecret %s/%s does not exist", ns, ps.Name)
		}
		return nil, fmt.Errorf("reading the imagePullSecret %s/%s: %w", ns, ps.Name, err)
	}
	cfg, err := registry.ParseDockerConfig(string(sec.Type), sec.Data)
	if err != nil {
		return nil, fmt.Errorf("the imagePullSecret %s/%s: %w", ns, ps.Name, err)
	}
	c, ok := cfg.For(reg)
	if !ok {
		keys := slices.Sorted(maps.Keys(cfg))
		return nil, fmt.Errorf("the imagePullSecret %s/%s has no credentials for %s (it has them for: %s)", ns, ps.Name, reg, strings.Join(keys, ", "))
	}
	return &c, nil
}

// puller reads one image from its registry.
type puller struct {
	http    *http.Client
	ref     registry.Reference
	base    string // scheme://host
	creds   *registry.Credentials
	auth    string // the Authorization header the registry accepted last
	maxSize int64
}

func (p *puller) slack() int64 { return min(layerSlack, p.maxSize) }

func newPuller(ref registry.Reference, caBundle []byte, creds *registry.Credentials, maxSize int64, guard *netguard.Policy) (*puller, error) {
	if len(caBundle) > 0 && !x509.NewCertPool().AppendCertsFromPEM(caBundle) {
		return nil, permanent("dataSource.containerImage.caBundle holds no PEM certificate")
	}
	c, err := httpClient(caBundle, guard)
	if err != nil {
		return nil, err
	}
	scheme := "https"
	if registry.IsLoopback(ref.Host()) && len(caBundle) == 0 {
		scheme = "http"
	}
	return &puller{http: c, ref: ref, base: scheme + "://" + ref.Host(), creds: creds, maxSize: maxSize}, nil
}

func (p *puller) url(kind, ref string) string {
	return p.base + "/v2/" + p.ref.Repository + "/" + kind + "/" + ref
}

// get sends a GET, going through the registry's challenge once when it answers 401.
func (p *puller) get(ctx context.Context, u, accept string) (*http.Response, error) {
	send := func() (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, permanent("%s: %w", u, err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		if p.auth != "" {
			req.Header.Set("Authorization", p.auth)
		}
		resp, err := p.http.Do(req)
		if r, ok := netguard.IsRefused(err); ok {
			err = permanentError{r}
		} else if err != nil && !isPermanent(err) {
			err = fmt.Errorf("pulling %s: %w", p.ref, err)
		}
		return resp, err
	}
	resp, err := send()
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	challenges := resp.Header.Values("WWW-Authenticate")
	resp.Body.Close()
	if err := p.authorize(ctx, challenges); err != nil {
		return nil, err
	}
	return send()
}

// authorize answers a registry's challenge: a bearer token from its realm (with the
// credentials, if any), or the credentials themselves for Basic.
func (p *puller) authorize(ctx context.Context, challenges []string) error {
	var basic bool
	for _, h := range challenges {
		c, ok := registry.ParseChallenge(h)
		if !ok {
			continue
		}
		switch c.Scheme {
		case "bearer":
			tok, err := p.token(ctx, c)
			if err != nil {
				return err
			}
			p.auth = "Bearer " + tok
			return nil
		case "basic":
			basic = true
		}
	}
	if basic && p.creds != nil {
		p.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(p.creds.Username+":"+p.creds.Password))
		return nil
	}
	if p.creds == nil {
		return fmt.Errorf("%s asks for credentials to pull %s: name a Secret with them in dataSource.containerImage.imagePullSecret", p.ref.Registry, p.ref.Repository)
	}
	return fmt.Errorf("%s asks for an authentication Ferry does not speak (%s)", p.ref.Registry, strings.Join(challenges, "; "))
}

// token gets a pull token from a Bearer challenge's realm (the distribution token
// protocol); the realm is https, or http on loopback.
func (p *puller) token(ctx context.Context, c registry.Challenge) (string, error) {
	realm, err := url.Parse(c.Params["realm"])
	if err != nil || realm.Host == "" || (realm.Scheme != "https" && !(realm.Scheme == "http" && registry.IsLoopback(realm.Host))) {
		return "", permanent("%s names the token realm %q: an https:// URL (or http:// on loopback) is needed", p.ref.Registry, c.Params["realm"])
	}
	q := realm.Query()
	if s := c.Params["service"]; s != "" {
		q.Set("service", s)
	}
	scope := c.Params["scope"]
	if scope == "" {
		scope = "repository:" + p.ref.Repository + ":pull"
	}
	q.Set("scope", scope)
	realm.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, stallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return "", permanent("token realm %s: %w", realm.Redacted(), err)
	}
	if p.creds != nil {
		req.SetBasicAuth(p.creds.Username, p.creds.Password)
	}
	resp, err := p.http.Do(req)
	if r, ok := netguard.IsRefused(err); ok {
		return "", permanent("the registry's token realm %s: %w", realm.Redacted(), r)
	}
	if err != nil {
		return "", fmt.Errorf("getting a pull token from %s: %w", realm.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("getting a pull token for %s from %s: %s%s", p.ref.Repository, realm.Host, resp.Status, p.credentialsHint(resp.StatusCode))
	}
	var t struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&t); err != nil {
		return "", fmt.Errorf("reading the pull token from %s: %w", realm.Host, err)
	}
	if t.Token == "" {
		t.Token = t.AccessToken
	}
	if t.Token == "" {
		return "", fmt.Errorf("%s sent no pull token", realm.Host)
	}
	return t.Token, nil
}

// credentialsHint says, after a 401 or 403 to an anonymous pull, where credentials go.
func (p *puller) credentialsHint(status int) string {
	if p.creds != nil || (status != http.StatusUnauthorized && status != http.StatusForbidden) {
		return ""
	}
	return ": the registry asks for credentials; name a Secret with them in dataSource.containerImage.imagePullSecret"
}

// manifest fetches the image's manifest, through its index's linux/amd64 entry if the
// reference names an index.
func (p *puller) manifest(ctx context.Context) (*registry.Manifest, error) {
	parsed, err := p.fetchManifest(ctx, p.ref.ManifestRef(), p.ref.Digest)
	if err != nil {
		return nil, err
	}
	if ix := parsed.Index; ix != nil {
		d, err := ix.Select(platformOS, platformArch)
		if err != nil {
			return nil, permanent("%s: %w", p.ref, err)
		}
		if parsed, err = p.fetchManifest(ctx, d.Digest, d.Digest); err != nil {
			return nil, err
		}
		if parsed.Manifest == nil {
			return nil, permanent("%s: the index's %s/%s entry is another index", p.ref, platformOS, platformArch)
		}
	}
	m := parsed.Manifest
	var total int64
	for _, l := range m.Layers {
		switch {
		case len(l.URLs) > 0 || strings.Contains(l.MediaType, "foreign") || strings.Contains(l.MediaType, "nondistributable"):
			return nil, permanent("%s: layer %s is to be fetched from elsewhere (%s), which Ferry does not do", p.ref, l.Digest, l.MediaType)
		case strings.HasSuffix(l.MediaType, "+zstd"):
			return nil, permanent("%s: layer %s is zstd-compressed, which Ferry does not read: build the image with gzip or uncompressed layers", p.ref, l.Digest)
		case layerCompression(l.MediaType) == "":
			return nil, permanent("%s: layer %s has media type %q, not a tar layer", p.ref, l.Digest, l.MediaType)
		}
		total += l.Size
	}
	if total > p.maxSize+p.slack() {
		return nil, permanent("%s: the image's layers are %s, more than the controller's limit of %s (--max-image-size)", p.ref, humanBytes(total), humanBytes(p.maxSize))
	}
	return m, nil
}

// layerCompression is "gzip" or "none" for the layer types Ferry reads, "" otherwise.
func layerCompression(mediaType string) string {
	switch mediaType {
	case registry.MediaTypeOCILayerGzip, registry.MediaTypeDockerLayer:
		return "gzip"
	case registry.MediaTypeOCILayer:
		return "none"
	}
	return ""
}

// fetchManifest gets the manifest or index at ref and checks it against want (a digest)
// or, for a tag, against the digest the registry says it has.
func (p *puller) fetchManifest(ctx context.Context, ref, want string) (registry.Parsed, error) {
	// A manifest is small: a registry that takes longer to send one has stalled.
	ctx, cancel := context.WithTimeout(ctx, stallTimeout)
	defer cancel()
	resp, err := p.get(ctx, p.url("manifests", ref), registry.ManifestAccept)
	if err != nil {
		return registry.Parsed{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return registry.Parsed{}, fmt.Errorf("pulling the manifest of %s: %s%s%s", p.ref, resp.Status, errorDetail(resp.Body), p.credentialsHint(resp.StatusCode))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, registry.MaxManifestSize+1))
	if err != nil {
		return registry.Parsed{}, fmt.Errorf("reading the manifest of %s: %w", p.ref, err)
	}
	if len(body) > registry.MaxManifestSize {
		return registry.Parsed{}, permanent("%s: the manifest is larger than %d bytes", p.ref, registry.MaxManifestSize)
	}
	if want == "" {
		if d, err := registry.ParseDigest(resp.Header.Get("Docker-Content-Digest")); err == nil {
			want = d
		}
	}
	if want != "" {
		h := registry.Digester(want)
		h.Write(body)
		if got := registry.Sum(want, h); got != want {
			return registry.Parsed{}, permanent("%s: the manifest's digest is %s, not %s", p.ref, got, want)
		}
	}
	parsed, err := registry.ParseManifest(resp.Header.Get("Content-Type"), body)
	if err != nil {
		return registry.Parsed{}, permanent("%s: %w", p.ref, err)
	}
	return parsed, nil
}

// errorDetail is the message of a registry's error body, if it sent one.
func errorDetail(body io.Reader) string {
	var e struct {
		Errors []struct {
			Code, Message string
		} `json:"errors"`
	}
	if json.NewDecoder(io.LimitReader(body, 64<<10)).Decode(&e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return fmt.Sprintf(" (%s: %s)", e.Errors[0].Code, e.Errors[0].Message)
}

// blob starts reading a blob; the reader fails at its end unless the bytes match the
// descriptor's digest and size.
func (p *puller) blob(ctx context.Context, d registry.Descriptor) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	resp, err := p.get(ctx, p.url("blobs", d.Digest), "")
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("pulling layer %s of %s: %s%s", d.Digest, p.ref, resp.Status, errorDetail(resp.Body))
	}
	if resp.ContentLength >= 0 && resp.ContentLength != d.Size {
		resp.Body.Close()
		cancel()
		return nil, permanent("%s: the registry sends %d bytes for layer %s, whose manifest says %d", p.ref, resp.ContentLength, d.Digest, d.Size)
	}
	s := &stallReader{body: resp.Body, cancel: cancel}
	s.timer = time.AfterFunc(stallTimeout, func() { s.stalled.Store(true); cancel() })
	return &verifiedBlob{r: s, h: registry.Digester(d.Digest), desc: d, left: d.Size, ref: p.ref}, nil
}

// verifiedBlob reads exactly desc.Size bytes and checks their digest at the end.
type verifiedBlob struct {
	r    io.ReadCloser
	h    hash.Hash
	desc registry.Descriptor
	left int64
	ref  registry.Reference
	// err is the last error Read returned but EOF: the registry's fault, not the layer's
	// format, whatever gzip or tar make of it.
	err error
}

func (b *verifiedBlob) Read(p []byte) (int, error) {
	n, err := b.read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *verifiedBlob) read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	if int64(n) > b.left {
		return 0, permanent("%s: layer %s is longer than the %d bytes its manifest says", b.ref, b.desc.Digest, b.desc.Size)
	}
	b.left -= int64(n)
	b.h.Write(p[:n])
	if err == io.EOF {
		if b.left > 0 {
			return n, fmt.Errorf("layer %s ended %d bytes short: %w", b.desc.Digest, b.left, io.ErrUnexpectedEOF)
		}
		if got := registry.Sum(b.desc.Digest, b.h); got != b.desc.Digest {
			return n, permanent("%s: layer %s arrived with digest %s, not its own: refused", b.ref, b.desc.Digest, got)
		}
	}
	return n, err
}

func (b *verifiedBlob) Close() error { return b.r.Close() }
