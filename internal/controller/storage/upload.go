package storage

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// UploadPathPrefix is where the controller's upload endpoint serves: an object's URL is
// UploadPathPrefix/<kind>/[<namespace>/]<name>/<token>, kind in lower case.
const UploadPathPrefix = "/upload/"

// Uploads is the controller's upload endpoint for objects whose dataSource.type is
// Upload. An upload URL holds a token, an HMAC of the object's kind, namespace, name
// and UID under a key that only the controller (and the shared storage it keeps the key
// on) knows: whoever reads the URL in the object's status may upload, no one else, and
// an object deleted and created again gets new URLs. The body goes through the same
// copier as a download (size cap, checksum) and the same format checks; a checked file
// waits in the storage's uploads/ for the object's controller, which imports it as any
// other source (openUpload), so that status has one writer.
type Uploads struct {
	// Reader reads the objects an upload names (past the cache: any replica answers).
	Reader client.Reader
	// Root is the shared storage directory.
	Root string
	// MaxSize caps an upload (0: DefaultMaxImageSize).
	MaxSize int64
	// ExternalURL and InClusterURL are the bases of the URLs in status (scheme, host and
	// port); an empty one is left out of status.
	ExternalURL, InClusterURL string

	mu     sync.Mutex
	key    []byte
	active map[string]bool
}

// uploadKind is an object kind's name in upload URLs.
var uploadKinds = map[string]string{
	"clustervirtualimage": v1alpha2.ClusterVirtualImageKind,
	"virtualimage":        v1alpha2.VirtualImageKind,
	"virtualdisk":         v1alpha2.VirtualDiskKind,
}

// uploadTarget is what an upload URL names.
type uploadTarget struct {
	Kind, Namespace, Name, Token string
}

// parseUploadPath reads an upload URL's path: UploadPathPrefix, the kind, the namespace
// (namespaced kinds only), the name and the token, each a plain path segment.
func parseUploadPath(p string) (uploadTarget, error) {
	rest, ok := strings.CutPrefix(p, UploadPathPrefix)
	if !ok {
		return uploadTarget{}, fmt.Errorf("not an upload path")
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 3 {
		return uploadTarget{}, fmt.Errorf("an upload path is %s<kind>/[<namespace>/]<name>/<token>", UploadPathPrefix)
	}
	kind, ok := uploadKinds[parts[0]]
	if !ok {
		return uploadTarget{}, fmt.Errorf("no uploads to %q", parts[0])
	}
	t := uploadTarget{Kind: kind}
	want := 4
	if kind == v1alpha2.ClusterVirtualImageKind {
		want = 3
	}
	if len(parts) != want {
		return uploadTarget{}, fmt.Errorf("an upload path to a %s has %d segments after %s", kind, want, UploadPathPrefix)
	}
	if want == 4 {
		t.Namespace = parts[1]
	}
	t.Name, t.Token = parts[want-2], parts[want-1]
	if errs := validation.IsDNS1123Subdomain(t.Name); len(errs) > 0 {
		return uploadTarget{}, fmt.Errorf("invalid name %q", t.Name)
	}
	if errs := validation.IsDNS1123Label(t.Namespace); want == 4 && len(errs) > 0 {
		return uploadTarget{}, fmt.Errorf("invalid namespace %q", t.Namespace)
	}
	if len(t.Token) != 64 {
		return uploadTarget{}, fmt.Errorf("a token is 64 hex digits")
	}
	if _, err := hex.DecodeString(t.Token); err != nil {
		return uploadTarget{}, fmt.Errorf("a token is 64 hex digits")
	}
	return t, nil
}

// keyFile holds the HMAC key of upload tokens, on the shared storage so that every
// replica of the controller has the same one.
func keyFile(root string) string { return filepath.Join(root, "uploads", ".key") }

// loadKey reads the key, making it on first need. Two replicas making it at once agree:
// the key is linked into place, and the one that loses reads the other's.
func (u *Uploads) loadKey() ([]byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.key != nil {
		return u.key, nil
	}
	path := keyFile(u.Root)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*")
		if err != nil {
			return nil, err
		}
		defer os.Remove(tmp.Name())
		if _, err := tmp.Write(key); err != nil {
			tmp.Close()
			return nil, err
		}
		if err := tmp.Close(); err != nil {
			return nil, err
		}
		if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		key, err = os.ReadFile(path)
		if err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("the upload key %s is not 32 bytes", path)
	}
	u.key = key
	return key, nil
}

// token is the object's upload token.
func (u *Uploads) token(obj client.Object) (string, error) {
	key, err := u.loadKey()
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s\n%s\n%s\n%s", kindOf(obj), obj.GetNamespace(), obj.GetName(), obj.GetUID())
	return hex.EncodeToString(m.Sum(nil)), nil
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *v1alpha2.ClusterVirtualImage:
		return v1alpha2.ClusterVirtualImageKind
	case *v1alpha2.VirtualImage:
		return v1alpha2.VirtualImageKind
	case *v1alpha2.VirtualDisk:
		return v1alpha2.VirtualDiskKind
	}
	return ""
}

// urls are the object's upload URLs for its status (nil without an endpoint).
func (u *Uploads) urls(obj client.Object) (*v1alpha2.ImageUploadURLs, error) {
	if u == nil || (u.ExternalURL == "" && u.InClusterURL == "") {
		return nil, nil
	}
	tok, err := u.token(obj)
	if err != nil {
		return nil, err
	}
	p := UploadPathPrefix + strings.ToLower(kindOf(obj)) + "/"
	if ns := obj.GetNamespace(); ns != "" {
		p += ns + "/"
	}
	p += obj.GetName() + "/" + tok
	out := &v1alpha2.ImageUploadURLs{}
	if u.ExternalURL != "" {
		out.External = strings.TrimSuffix(u.ExternalURL, "/") + p
	}
	if u.InClusterURL != "" {
		out.InCluster = strings.TrimSuffix(u.InClusterURL, "/") + p
	}
	return out, nil
}

// The files of an object's upload under the storage's uploads/, named by its UID.
func uploadFile(root string, obj client.Object, suffix string) string {
	return filepath.Join(root, "uploads", string(obj.GetUID())+suffix)
}

const (
	uploadReceived = ".img"      // checked, waiting for the object's controller
	uploadRefused  = ".refused"  // why the last upload was refused
	uploadProgress = ".progress" // the upload under way (JSON progress)
)

// openUpload opens an object's received upload, or says the object waits for one.
func openUpload(root string, obj client.Object) (io.ReadCloser, int64, error) {
	rc, size, err := openFile(uploadFile(root, obj, uploadReceived))
	if err == nil {
		return rc, size, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, 0, err
	}
	verb := "ferry v upload cvi/" + obj.GetName()
	if ns := obj.GetNamespace(); ns != "" {
		verb = "ferry v upload -n " + ns + " " + map[string]string{v1alpha2.VirtualImageKind: "vi", v1alpha2.VirtualDiskKind: "vd"}[kindOf(obj)] + "/" + obj.GetName()
	}
	msg := "waiting for the image's file to be uploaded to a URL of status.imageUploadURLs: `" + verb + " FILE`, or `curl -T FILE URL`"
	if why, err := os.ReadFile(uploadFile(root, obj, uploadRefused)); err == nil {
		msg = "the last upload was refused (" + strings.TrimSpace(string(why)) + "); " + msg
	}
	return nil, 0, waiting(v1alpha2.ReasonWaitForUserUpload, "%s", msg)
}

// removeUpload removes what an object's uploads left.
func removeUpload(root string, obj client.Object) {
	for _, s := range []string{uploadReceived, uploadRefused, uploadProgress} {
		_ = os.Remove(uploadFile(root, obj, s))
	}
}

// uploadProgressOf reads the progress of an upload under way; a report older than a
// minute is from an upload that ended without saying so.
func uploadProgressOf(root string, obj client.Object) (progress, bool) {
	path := uploadFile(root, obj, uploadProgress)
	fi, err := os.Stat(path)
	if err != nil || time.Since(fi.ModTime()) > time.Minute {
		return progress{}, false
	}
	b, err := os.ReadFile(path)
	var p progress
	if err != nil || json.Unmarshal(b, &p) != nil {
		return progress{}, false
	}
	return p, true
}

// dataSourceOf is an object's data source.
func dataSourceOf(obj client.Object) *v1alpha2.DataSource {
	switch o := obj.(type) {
	case imageObject:
		return o.ImageSource()
	case *v1alpha2.VirtualDisk:
		return o.Spec.DataSource
	}
	return nil
}

// uploadError is an answer to an upload that is refused.
type uploadError struct {
	code int
	msg  string
}

func (e uploadError) Error() string { return e.msg }

// ServeHTTP takes a PUT or POST of an image's file to an object's upload URL.
func (u *Uploads) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// A client that stops sending is cut off after stallTimeout, as a download is.
	req.Body = &stallBody{ReadCloser: req.Body, rc: http.NewResponseController(w)}
	msg, err := u.receive(req)
	var ue uploadError
	switch {
	case err == nil:
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintln(w, msg)
	case errors.As(err, &ue):
		http.Error(w, ue.msg, ue.code)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// stallBody moves the connection's read deadline on before each read of the body.
type stallBody struct {
	io.ReadCloser
	rc *http.ResponseController
}

func (b *stallBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(stallTimeout))
	return b.ReadCloser.Read(p)
}

// forbidden is the one answer to a URL that is not an object's upload URL, whatever is
// wrong with it: a caller without the URL learns nothing of which objects exist.
var forbidden = uploadError{http.StatusForbidden, "not an upload URL of an object waiting for an upload"}

func (u *Uploads) receive(req *http.Request) (string, error) {
	if req.Method != http.MethodPut && req.Method != http.MethodPost {
		return "", uploadError{http.StatusMethodNotAllowed, "upload the image's file with PUT or POST (curl -T FILE URL)"}
	}
	t, err := parseUploadPath(req.URL.Path)
	if err != nil {
		return "", forbidden
	}
	obj, err := refObject(t.Kind)
	if err != nil {
		return "", forbidden
	}
	if err := u.Reader.Get(req.Context(), client.ObjectKey{Namespace: t.Namespace, Name: t.Name}, obj); err != nil {
		return "", forbidden
	}
	want, err := u.token(obj)
	if err != nil {
		return "", err
	}
	if !hmac.Equal([]byte(want), []byte(t.Token)) {
		return "", forbidden
	}
	ds := dataSourceOf(obj)
	if ds == nil || ds.Type != v1alpha2.SourceUpload || !obj.GetDeletionTimestamp().IsZero() {
		return "", forbidden
	}
	if obj.(importable).ImportState().Phase == v1alpha2.ImageReady {
		return "", uploadError{http.StatusConflict, fmt.Sprintf("%s %s is Ready: its image was uploaded already", t.Kind, t.Name)}
	}
	uid := string(obj.GetUID())
	if !u.begin(uid) {
		return "", uploadError{http.StatusConflict, "another upload to this object is under way"}
	}
	defer u.end(uid)
	maxSize := u.MaxSize
	if maxSize <= 0 {
		maxSize = DefaultMaxImageSize
	}
	if req.ContentLength > maxSize {
		return "", u.refuse(obj, uploadError{http.StatusRequestEntityTooLarge, fmt.Sprintf("the upload is %d bytes, more than the controller's limit of %s (--max-image-size)", req.ContentLength, humanBytes(maxSize))})
	}
	im := importer{root: u.Root, maxSize: maxSize, every: time.Second}
	progressFile := uploadFile(u.Root, obj, uploadProgress)
	defer os.Remove(progressFile)
	report := func(p progress) error {
		b, _ := json.Marshal(p)
		tmp := progressFile + ".tmp"
		if os.WriteFile(tmp, b, 0o600) == nil {
			_ = os.Rename(tmp, progressFile)
		}
		return nil
	}
	dir := filepath.Dir(progressFile)
	tmp, info, err := im.fetch(req.Context(), obj, *ds, io.NopCloser(req.Body), max(req.ContentLength, 0), dir, "."+uid+"_*", report)
	if err != nil {
		var tl tooLarge
		switch {
		case errors.As(err, &tl):
			return "", u.refuse(obj, uploadError{http.StatusRequestEntityTooLarge, err.Error()})
		case isPermanent(err):
			return "", u.refuse(obj, uploadError{http.StatusUnprocessableEntity, err.Error()})
		}
		return "", uploadError{http.StatusBadRequest, fmt.Sprintf("the upload did not complete: %v", err)}
	}
	if err := os.Rename(tmp, uploadFile(u.Root, obj, uploadReceived)); err != nil {
		os.Remove(tmp)
		return "", err
	}
	_ = os.Remove(uploadFile(u.Root, obj, uploadRefused))
	return fmt.Sprintf("Received a %s image of %s for %s %s: it is Ready within seconds.", info.Format, humanBytes(info.VirtualSize), t.Kind, t.Name), nil
}

// refuse records why an upload was refused, for the object's condition, and returns e.
func (u *Uploads) refuse(obj client.Object, e uploadError) error {
	_ = os.WriteFile(uploadFile(u.Root, obj, uploadRefused), []byte(e.msg), 0o600)
	return e
}

func (u *Uploads) begin(uid string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.active == nil {
		u.active = map[string]bool{}
	}
	if u.active[uid] {
		return false
	}
	u.active[uid] = true
	return true
}

func (u *Uploads) end(uid string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.active, uid)
}

// Server serves the upload endpoint on a listener of its own (plain HTTP: for tests, and
// behind a proxy that terminates TLS), on every replica of the controller.
type Server struct {
	Listener net.Listener
	Handler  http.Handler
}

// Start serves until ctx ends.
func (s Server) Start(ctx context.Context) error {
	srv := &http.Server{Handler: s.Handler, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(s.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// NeedLeaderElection is false: every replica takes uploads.
func (Server) NeedLeaderElection() bool { return false }
