package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Handler serves the OCI image layout in dir read-only over the distribution API's pull
// endpoints: GET and HEAD of /v2/, /v2/<repo>/manifests/<tag|digest>,
// /v2/<repo>/blobs/<digest>, /v2/<repo>/tags/list and /v2/_catalog. Anything that would
// write is refused: images get there with Push. It reads the directory on every request,
// so what Push adds is served at once.
func Handler(dir string) http.Handler {
	return &server{dir: dir}
}

type server struct{ dir string }

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		apiError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "this registry is read-only: add images with `ferry registry push`")
		return
	}
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	case p == "/v2/_catalog":
		s.catalog(w)
	case strings.HasPrefix(p, "/v2/"):
		s.route(w, r, strings.TrimPrefix(p, "/v2/"))
	default:
		apiError(w, http.StatusNotFound, "NOT_FOUND", "not a registry API path")
	}
}

// route serves <repo>/manifests/<ref>, <repo>/blobs/<digest> and <repo>/tags/list.
func (s *server) route(w http.ResponseWriter, r *http.Request, rest string) {
	if repo, ok := strings.CutSuffix(rest, "/tags/list"); ok && CheckRepository(repo) == nil {
		s.tags(w, repo)
		return
	}
	for _, kind := range []string{"/manifests/", "/blobs/"} {
		i := strings.LastIndex(rest, kind)
		if i < 0 {
			continue
		}
		repo, ref := rest[:i], rest[i+len(kind):]
		if CheckRepository(repo) != nil {
			apiError(w, http.StatusNotFound, "NAME_INVALID", "invalid repository name")
			return
		}
		if kind == "/blobs/" {
			s.blob(w, r, ref)
		} else {
			s.manifest(w, r, repo, ref)
		}
		return
	}
	apiError(w, http.StatusNotFound, "NOT_FOUND", "not a registry API path")
}

func (s *server) manifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	ix, err := readIndex(s.dir)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	if d, err := ParseDigest(ref); err == nil {
		ref = d
	} else if CheckTag(ref) != nil {
		apiError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "invalid tag or digest")
		return
	}
	d, ok := lookup(ix, repo, ref)
	if !ok {
		apiError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", fmt.Sprintf("no manifest %s in %s", ref, repo))
		return
	}
	w.Header().Set("Docker-Content-Digest", d.Digest)
	s.serveBlob(w, r, d.Digest, d.MediaType, "MANIFEST_UNKNOWN")
}

func (s *server) blob(w http.ResponseWriter, r *http.Request, ref string) {
	d, err := ParseDigest(ref)
	if err != nil {
		apiError(w, http.StatusNotFound, "DIGEST_INVALID", err.Error())
		return
	}
	w.Header().Set("Docker-Content-Digest", d)
	s.serveBlob(w, r, d, "application/octet-stream", "BLOB_UNKNOWN")
}

// serveBlob serves a blob's file (Range and HEAD included, by http.ServeContent).
func (s *server) serveBlob(w http.ResponseWriter, r *http.Request, digest, mediaType, unknown string) {
	f, err := os.Open(blobPath(s.dir, digest))
	if err != nil {
		apiError(w, http.StatusNotFound, unknown, digest+" is not in this registry")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		apiError(w, http.StatusNotFound, unknown, digest+" is not in this registry")
		return
	}
	w.Header().Set("Content-Type", mediaType)
	w.Header().Set("ETag", `"`+digest+`"`)
	http.ServeContent(w, r, "", time.Time{}, f)
}

func (s *server) tags(w http.ResponseWriter, repo string) {
	ix, err := readIndex(s.dir)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	tags := []string{}
	for _, d := range ix.Manifests {
		if r, tag, ok := strings.Cut(d.Annotations[RefNameAnnot], ":"); ok && r == repo {
			tags = append(tags, tag)
		}
	}
	if len(tags) == 0 {
		apiError(w, http.StatusNotFound, "NAME_UNKNOWN", "no repository "+repo)
		return
	}
	slices.Sort(tags)
	writeJSON(w, map[string]any{"name": repo, "tags": tags})
}

func (s *server) catalog(w http.ResponseWriter) {
	ix, err := readIndex(s.dir)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	repos := []string{}
	for _, d := range ix.Manifests {
		if r, _, ok := strings.Cut(d.Annotations[RefNameAnnot], ":"); ok && !slices.Contains(repos, r) {
			repos = append(repos, r)
		}
	}
	slices.Sort(repos)
	writeJSON(w, map[string]any{"repositories": repos})
}

func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// apiError answers with the distribution spec's error body.
func apiError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Serve serves dir's images on listen until ctx ends; it returns the address it listens
// on once it does.
func Serve(ctx context.Context, dir, listen string) (string, <-chan error, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: Handler(dir), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return ln.Addr().String(), done, nil
}
