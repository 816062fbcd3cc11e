package storage

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestOpenSourceFile: file:// reads a regular file in a listed directory, through a
// symlink that stays in one too; anything else is refused for good with a reason, except
// a file not there yet in a listed directory, which is tried again.
func TestOpenSourceFile(t *testing.T) {
	top := t.TempDir()
	src := filepath.Join(top, "sources")
	other := filepath.Join(top, "sources2")
	outside := filepath.Join(top, "elsewhere")
	root := filepath.Join(src, "storage") // a listed directory holding the storage
	for _, d := range []string{src, other, outside, filepath.Join(root, "disks")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string) string {
		if err := os.WriteFile(p, rawDisk(4096), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write(filepath.Join(src, "good.raw"))
	inOther := write(filepath.Join(other, "b.raw"))
	secret := write(filepath.Join(outside, "migration.key"))
	disk := write(filepath.Join(root, "disks", "tenant.qcow2"))
	link := func(name, target string) string {
		p := filepath.Join(src, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fifo := filepath.Join(src, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	dirs := []string{src, other}
	for _, tc := range []struct {
		name, url string
		dirs      []string
		want      string // "" opens; else the error says it
		retried   bool
	}{
		{"listed", "file://" + good, dirs, "", false},
		{"link within", "file://" + link("in.raw", "good.raw"), dirs, "", false},
		{"link to another listed dir", "file://" + link("other.raw", inOther), dirs, "", false},
		{"localhost", "file://localhost" + good, dirs, "", false},
		{"none listed", "file://" + good, nil, "lists none", false},
		{"outside", "file:///etc/hostname", dirs, "outside the directories", false},
		{"dot-dot", "file://" + src + "/../elsewhere/migration.key", dirs, "outside the directories", false},
		{"link escaping", "file://" + link("escape.raw", secret), dirs, "through a symlink", false},
		{"link to a directory escaping", "file://" + link("up", "..") + "/elsewhere/migration.key", dirs, "through a symlink", false},
		{"storage", "file://" + disk, dirs, "storage", false},
		{"host", "file://etc/hostname", dirs, "names host", false},
		{"directory", "file://" + src, dirs, "not a regular file", false},
		{"fifo", "file://" + fifo, dirs, "not a regular file", false},
		{"not yet there", "file://" + filepath.Join(src, "later.raw"), dirs, "does not exist", true},
		{"not there and outside", "file://" + filepath.Join(outside, "later.raw"), dirs, "outside the directories", false},
		{"not there, through a link out", "file://" + filepath.Join(src, "up", "elsewhere", "later.raw"), dirs, "through a symlink", false},
		{"not there, in a missing directory", "file://" + filepath.Join(src, "new", "later.raw"), dirs, "does not exist", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var f interface{ Close() error }
			go func() {
				defer close(done)
				f, _, err = openSourceFile(tc.dirs, root, u)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("openSourceFile blocked")
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				f.Close()
				return
			}
			if err == nil {
				f.Close()
				t.Fatalf("opened, want an error saying %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || isPermanent(err) == tc.retried {
				t.Fatalf("got %v (permanent %v), want %q (tried again: %v)", err, isPermanent(err), tc.want, tc.retried)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
}

func TestCheckSourceDirs(t *testing.T) {
	if err := CheckSourceDirs([]string{"/a", "/b/c"}); err != nil {
		t.Error(err)
	}
	if err := CheckSourceDirs([]string{"/a", "images"}); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("a relative directory: %v", err)
	}
}

// TestRedirects: a download follows redirects to http(s) only, never from https down to
// http, and at most 10; the refusals are permanent.
func TestRedirects(t *testing.T) {
	body := rawDisk(1 << 20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-file":
			http.Redirect(w, r, "file:///etc/hostname", http.StatusFound)
		case "/to-gopher":
			http.Redirect(w, r, "gopher://127.0.0.1/x", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/once":
			http.Redirect(w, r, "/disk", http.StatusFound)
		default:
			w.Write(body)
		}
	}))
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, srv.URL+"/disk", http.StatusFound)
	}))
	defer tlsSrv.Close()
	for _, tc := range []struct{ path, want string }{
		{srv.URL + "/once", ""},
		{srv.URL + "/to-file", "only http:// and https://"},
		{srv.URL + "/to-gopher", "only http:// and https://"},
		{srv.URL + "/loop", "redirected 10 times"},
		{tlsSrv.URL + "/down", "from https to plain http"},
	} {
		img := httpImage("img", tc.path, nil)
		img.Spec.DataSource.HTTP.CABundle = pemCert(tlsSrv.Certificate().Raw)
		e := newImageEnv(t, img)
		img, _ = e.reconcile(t, "img")
		cond := readyCondition(img)
		if tc.want == "" {
			if img.Status.Phase != v1alpha2.ImageReady {
				t.Errorf("%s: %s, %s; want Ready", tc.path, img.Status.Phase, cond)
			}
			continue
		}
		if img.Status.Phase != v1alpha2.ImageFailed || !strings.Contains(cond, tc.want) {
			t.Errorf("%s: %s, %s; want Failed saying %q", tc.path, img.Status.Phase, cond, tc.want)
		}
		t.Logf("%s: %s", tc.path, cond)
	}
}

// TestDefaultCapRefusesADeclaredLength: with no --max-image-size the cap is 64 GiB, and a
// server that announces more is refused before a byte of the body is read.
func TestDefaultCapRefusesADeclaredLength(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "70000000000") // 65.2 GiB
		buf := make([]byte, 64<<10)
		for r.Context().Err() == nil {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	e := newImageEnv(t, httpImage("img", srv.URL, nil))
	img, _ := e.reconcile(t, "img")
	if cond := readyCondition(img); img.Status.Phase != v1alpha2.ImageFailed || !strings.Contains(cond, "64Gi (--max-image-size)") {
		t.Errorf("phase %s, condition %s; want Failed naming the 64Gi limit", img.Status.Phase, cond)
	}
	if left, _ := filepath.Glob(filepath.Join(e.r.Root, "images", "*")); len(left) != 0 {
		t.Errorf("files left in the storage: %v", left)
	}
	t.Logf("%s", readyCondition(img))
}
