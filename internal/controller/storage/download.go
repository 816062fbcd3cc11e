package storage

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/netguard"
)

// DefaultMaxImageSize caps what one image import may download: 64 GiB.
const DefaultMaxImageSize int64 = 64 << 30

// stallTimeout ends a download that received nothing for this long: a server that
// stops sending would otherwise hold a worker for good.
const stallTimeout = 2 * time.Minute

// permanentError is an import failure that trying again cannot fix (the file itself is
// wrong: checksum, size, format); anything else (a refused connection, a 503, a reset)
// is tried again with back-off.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// tooLarge is an image over the size cap.
type tooLarge string

func (e tooLarge) Error() string { return string(e) }

func permanent(format string, args ...any) error {
	return permanentError{fmt.Errorf(format, args...)}
}

func isPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// backoff is the wait before download attempt n+1 after n failures: 10 s, doubling, at
// most 5 minutes (the kubelet's restart back-off, which Deckhouse's importer pod gets).
func backoff(failures int32) time.Duration {
	d := 10 * time.Second
	for i := int32(1); i < failures && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// progress is a download's state, reported every few seconds.
type progress struct {
	Done, Total  int64 // Total is 0 when the server did not say
	Avg, Current int64 // bytes per second
}

func (p progress) percent() string {
	if p.Total <= 0 {
		return ""
	}
	return fmt.Sprintf("%d%%", min(p.Done*100/p.Total, 99))
}

// copier copies an image's bytes: it counts them against a size cap, hashes them for a
// checksum, and reports progress at most every `every`.
type copier struct {
	maxSize  int64
	every    time.Duration
	report   func(progress) error
	now      func() time.Time
	checksum *v1alpha2.Checksum
}

// copy writes src to dst; total is the length the source announced (0: unknown).
func (c copier) copy(ctx context.Context, dst io.Writer, src io.Reader, total int64) (int64, error) {
	if total > c.maxSize {
		return 0, permanentError{tooLarge(fmt.Sprintf("the server announces %d bytes (%.1f GiB), more than the controller's limit of %s (--max-image-size)", total, float64(total)/(1<<30), humanBytes(c.maxSize)))}
	}
	sums := newHashes(c.checksum)
	w := io.MultiWriter(append([]io.Writer{dst}, sums.writers()...)...)
	buf := make([]byte, 1<<20)
	start := c.now()
	last, lastDone := start, int64(0)
	var done int64
	for {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if done+int64(n) > c.maxSize {
				return done, permanentError{tooLarge(fmt.Sprintf("the image is larger than the controller's limit of %s (--max-image-size)", humanBytes(c.maxSize)))}
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return done, fmt.Errorf("writing the image: %w", err)
			}
			done += int64(n)
		}
		if now := c.now(); c.report != nil && now.Sub(last) >= c.every {
			p := progress{Done: done, Total: total, Avg: rate(done, now.Sub(start)), Current: rate(done-lastDone, now.Sub(last))}
			if err := c.report(p); err != nil {
				return done, err
			}
			last, lastDone = now, done
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return done, fmt.Errorf("reading the image after %d bytes: %w", done, rerr)
		}
	}
	if total > 0 && done != total {
		return done, fmt.Errorf("the server announced %d bytes and sent %d", total, done)
	}
	return done, sums.verify()
}

func rate(n int64, d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64(float64(n) / d.Seconds())
}

// hashes computes the sums a Checksum asks for.
type hashes []struct {
	name, want string
	h          hash.Hash
}

func newHashes(c *v1alpha2.Checksum) hashes {
	if c == nil {
		return nil
	}
	var hs hashes
	add := func(name, want string, h hash.Hash) {
		if want != "" {
			hs = append(hs, struct {
				name, want string
				h          hash.Hash
			}{name, strings.ToLower(want), h})
		}
	}
	add("md5", c.MD5, md5.New())
	add("sha1", c.SHA1, sha1.New())
	add("sha256", c.SHA256, sha256.New())
	add("sha512", c.SHA512, sha512.New())
	return hs
}

func (hs hashes) writers() []io.Writer {
	ws := make([]io.Writer, len(hs))
	for i := range hs {
		ws[i] = hs[i].h
	}
	return ws
}

func (hs hashes) verify() error {
	for _, s := range hs {
		if got := hex.EncodeToString(s.h.Sum(nil)); got != s.want {
			return permanent("checksum mismatch: the downloaded file's %s is %s, dataSource.http.checksum.%s is %s", s.name, got, s.name, s.want)
		}
	}
	return nil
}

// httpClient trusts the system's CAs and, for an https URL, those of caBundle. It
// connects only where guard allows (nil: netguard.Default()), checked at each connection:
// after DNS and on every redirect.
func httpClient(caBundle []byte, guard *netguard.Policy) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = guard.Dialer(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = time.Minute
	// The bytes are the server's file as it is: no transparent gunzip, which would let a
	// few compressed megabytes stand for the whole size cap, and would hash other bytes
	// than the file's checksum covers.
	t.DisableCompression = true
	if len(caBundle) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(caBundle) {
			return nil, permanent("dataSource.http.caBundle holds no PEM certificate")
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t, CheckRedirect: checkRedirect}, nil
}

// maxRedirects is as many as Go's client follows by default.
const maxRedirects = 10

// checkRedirect follows at most maxRedirects redirects, to http or https only (Go's
// transport has no other scheme anyway: this says so in the image's status), and never
// from https down to plain http, which would drop the caBundle's guarantee.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return permanent("the server redirected %d times", len(via))
	}
	switch req.URL.Scheme {
	case "http", "https":
	default:
		return permanent("the server redirected to %s: only http:// and https:// redirects are followed", req.URL.Redacted())
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme == "http" {
		return permanent("the server redirected from https to plain http (%s)", req.URL.Redacted())
	}
	return nil
}

// get starts a download; the body is read under a stall watchdog.
func get(ctx context.Context, url string, caBundle []byte, guard *netguard.Policy) (io.ReadCloser, int64, error) {
	client, err := httpClient(caBundle, guard)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, 0, permanent("dataSource.http.url: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		if isPermanent(err) {
			return nil, 0, err
		}
		if r, ok := netguard.IsRefused(err); ok {
			return nil, 0, permanentError{r}
		}
		return nil, 0, fmt.Errorf("downloading: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, 0, fmt.Errorf("downloading %s: %s", url, resp.Status)
	}
	s := &stallReader{body: resp.Body, cancel: cancel}
	s.timer = time.AfterFunc(stallTimeout, func() { s.stalled.Store(true); cancel() })
	return s, max(resp.ContentLength, 0), nil
}

// stallReader cancels its request when no byte arrived for stallTimeout.
type stallReader struct {
	body    io.ReadCloser
	cancel  context.CancelFunc
	timer   *time.Timer
	stalled atomic.Bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.body.Read(p)
	if n > 0 {
		s.timer.Reset(stallTimeout)
	}
	if err != nil && s.stalled.Load() {
		err = fmt.Errorf("the server sent nothing for %s", stallTimeout)
	}
	return n, err
}

func (s *stallReader) Close() error {
	s.timer.Stop()
	s.cancel()
	return s.body.Close()
}
