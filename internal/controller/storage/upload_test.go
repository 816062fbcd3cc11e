package storage

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

var token = strings.Repeat("ab", 32)

func TestParseUploadPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want uploadTarget
		ok   bool
	}{
		{"/upload/virtualimage/ns/debian/" + token, uploadTarget{v1alpha2.VirtualImageKind, "ns", "debian", token}, true},
		{"/upload/virtualdisk/ns/root.disk/" + token, uploadTarget{v1alpha2.VirtualDiskKind, "ns", "root.disk", token}, true},
		{"/upload/clustervirtualimage/debian/" + token, uploadTarget{v1alpha2.ClusterVirtualImageKind, "", "debian", token}, true},
		{"/upload/clustervirtualimage/ns/debian/" + token, uploadTarget{}, false},
		{"/upload/virtualimage/debian/" + token, uploadTarget{}, false},
		{"/upload/virtualimage/ns/debian/" + token + "/", uploadTarget{}, false},
		{"/upload/virtualimage/ns/../" + token, uploadTarget{}, false},
		{"/upload/virtualimage/../debian/" + token, uploadTarget{}, false},
		{"/upload/virtualimage/ns/Debian/" + token, uploadTarget{}, false},
		{"/upload/virtualimage/ns/debian/" + token[:63], uploadTarget{}, false},
		{"/upload/virtualimage/ns/debian/" + strings.Repeat("zz", 32), uploadTarget{}, false},
		{"/upload/virtualmachine/ns/vm/" + token, uploadTarget{}, false},
		{"/other/virtualimage/ns/debian/" + token, uploadTarget{}, false},
		{"/upload/", uploadTarget{}, false},
	} {
		got, err := parseUploadPath(tc.path)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("%s: %+v, %v", tc.path, got, err)
		}
	}
}

// TestUploadTokens: an object's token is the same for every replica (one key on the
// storage) and differs for another object, or the same one created again.
func TestUploadTokens(t *testing.T) {
	root := t.TempDir()
	a, b := &Uploads{Root: root, ExternalURL: "https://127.0.0.1:1"}, &Uploads{Root: root, InClusterURL: "https://svc"}
	vi := &v1alpha2.VirtualImage{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "debian", UID: "uid-1"}}
	again := vi.DeepCopy()
	again.UID = "uid-2"
	cvi := &v1alpha2.ClusterVirtualImage{ObjectMeta: metav1.ObjectMeta{Name: "debian", UID: "uid-1"}}
	ta, _ := a.token(vi)
	tb, _ := b.token(vi)
	tAgain, _ := a.token(again)
	tCVI, _ := a.token(cvi)
	if ta != tb || len(ta) != 64 {
		t.Errorf("two replicas' tokens %q %q", ta, tb)
	}
	if ta == tAgain || ta == tCVI {
		t.Errorf("tokens of other objects are the same: %q %q %q", ta, tAgain, tCVI)
	}
	urls, err := a.urls(vi)
	if err != nil || urls.External != "https://127.0.0.1:1/upload/virtualimage/ns/debian/"+ta || urls.InCluster != "" {
		t.Errorf("urls %+v %v", urls, err)
	}
	got, err := parseUploadPath(strings.TrimPrefix(urls.External, "https://127.0.0.1:1"))
	if err != nil || got.Token != ta || got.Name != "debian" || got.Namespace != "ns" {
		t.Errorf("the URL does not parse back: %+v %v", got, err)
	}
	if u, _ := (*Uploads)(nil).urls(vi); u != nil {
		t.Errorf("no endpoint, yet URLs %+v", u)
	}
}

// FuzzParseUploadPath: any request path parses or is refused without a panic; what
// parses names a known kind, valid names and a 64-digit token, and renders back to the
// same path.
func FuzzParseUploadPath(f *testing.F) {
	f.Add("/upload/virtualimage/ns/debian/" + token)
	f.Add("/upload/clustervirtualimage/debian/" + token)
	f.Add("/upload/virtualdisk/ns/a.b/" + token)
	f.Add("/upload/virtualimage/ns/%2e%2e/" + token)
	f.Add("/upload//ns/x/y")
	f.Fuzz(func(t *testing.T, p string) {
		got, err := parseUploadPath(p)
		if err != nil {
			return
		}
		if len(got.Token) != 64 || got.Name == "" || strings.ContainsAny(got.Name+got.Namespace, "/%\\") || got.Name == ".." || got.Namespace == ".." {
			t.Fatalf("%q parsed as %+v", p, got)
		}
		re := UploadPathPrefix + strings.ToLower(got.Kind) + "/"
		if got.Namespace != "" {
			re += got.Namespace + "/"
		}
		if re += got.Name + "/" + got.Token; re != p {
			t.Fatalf("%q parsed as %+v, which renders as %q", p, got, re)
		}
	})
}
