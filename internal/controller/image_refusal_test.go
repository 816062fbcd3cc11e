package controller_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// testMaxImageSize is the envtest controller's --max-image-size (main_test.go).
const testMaxImageSize = 64 << 20

// refusedFor waits for the image to fail for good and checks that its Ready condition
// says want, and that nothing of it is left in the storage.
func refusedFor(t *testing.T, name, want string) {
	t.Helper()
	img := waitImage(t, name, v1alpha2.ImageFailed)
	c := meta.FindStatusCondition(img.Status.Conditions, v1alpha2.ImageConditionReady)
	if c == nil || c.Reason != v1alpha2.ReasonImportFailed || !strings.Contains(c.Message, want) {
		t.Errorf("%s: condition %+v, want ImportFailed saying %q", name, c, want)
	} else {
		t.Logf("%s: %s", name, c.Message)
	}
	left, err := filepath.Glob(filepath.Join(storageDir, "images", "*"+name+"*"))
	if err != nil || len(left) != 0 {
		t.Errorf("%s: files left in the storage: %v %v", name, left, err)
	}
}

// stillImports: after the refusals, the controller imports a good image (through a
// symlink that stays in the sources directory) and makes a disk of it.
func stillImports(t *testing.T, ns string) {
	t.Helper()
	good := writeRawImage(t, ns+"-good.raw")
	link := filepath.Join(imagesDir, ns+"-good-link.raw")
	if err := os.Symlink(filepath.Base(good), link); err != nil {
		t.Fatal(err)
	}
	img := fileImage(ns+"-good", link)
	createAll(t, img, diskFromImage(ns, "root", img.Name, "64Mi"))
	waitImage(t, img.Name, v1alpha2.ImageReady)
	waitDisk(t, ns, "root", v1alpha2.ImageReady)
}

// qcow2Crafted is a 1 MiB file that starts with a qcow2 v3 header, ends its first sector
// with a boot signature (as raw it would look bootable), and holds name at 4096, which a
// backing file offset or a data file extension may point at.
func qcow2Crafted(t *testing.T, file string, backing bool, dataFileExt, incompat uint64, name string) string {
	t.Helper()
	b := make([]byte, 1<<20)
	copy(b, "QFI\xfb")
	be := binary.BigEndian
	be.PutUint32(b[4:], 3)
	if backing {
		be.PutUint64(b[8:], 4096)
		be.PutUint32(b[16:], uint32(len(name)))
	}
	be.PutUint32(b[20:], 16)       // cluster bits
	be.PutUint64(b[24:], 1<<20)    // size
	be.PutUint64(b[72:], incompat) // incompatible features
	be.PutUint32(b[96:], 4)        // refcount order
	be.PutUint32(b[100:], 104)     // header length
	if dataFileExt != 0 {
		be.PutUint32(b[104:], uint32(dataFileExt))
		be.PutUint32(b[108:], uint32(len(name)))
		copy(b[112:], name)
	}
	copy(b[4096:], name)
	b[510], b[511] = 0x55, 0xAA
	p := filepath.Join(imagesDir, file)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImagesNamingHostFilesAreRefused: qcow2 images whose backing file is a host file
// (/etc/hostname, a stand-in for the node's migration key, a json: filename) or that have
// an external data file (made by qemu-img, or a header naming /dev/sda) fail with the
// reason, and leave nothing in the storage; the controller imports a good image after.
func TestImagesNamingHostFilesAreRefused(t *testing.T) {
	ns := newNamespace(t)
	key := filepath.Join(t.TempDir(), "migration-tls", "tls.key")
	if err := os.MkdirAll(filepath.Dir(key), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	qemu := func(file string, args ...string) string {
		p := filepath.Join(imagesDir, file)
		if out, err := exec.Command("qemu-img", append(append([]string{"create", "-q", "-f", "qcow2"}, args...), p, "1M")...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create %v: %v: %s", args, err, out)
		}
		return p
	}
	cases := map[string]struct{ path, want string }{
		"hostname": {qemu(ns+"-hostname.qcow2", "-u", "-b", "/etc/hostname", "-F", "raw"), "backing file"},
		"key":      {qemu(ns+"-key.qcow2", "-u", "-b", key, "-F", "raw"), "backing file"},
		"json":     {qemu(ns+"-json.qcow2", "-u", "-b", `json:{"driver":"raw","file":{"driver":"file","filename":"/etc/hostname"}}`, "-F", "raw"), "backing file"},
		"datafile": {qemu(ns+"-datafile.qcow2", "-o", "data_file="+filepath.Join(t.TempDir(), "data.bin")+",data_file_raw=on"), "external data file"},
		"dev-sda":  {qcow2Crafted(t, ns+"-sda.qcow2", false, 0x44415441, 1<<2, "/dev/sda"), "external data file"},
		"dev-sda-no-bit": {qcow2Crafted(t, ns+"-sda-nobit.qcow2", false, 0x44415441, 0, "/dev/sda"),
			"external data file name"},
	}
	for name, c := range cases {
		createAll(t, fileImage(ns+"-"+name, c.path))
	}
	for name, c := range cases {
		refusedFor(t, ns+"-"+name, c.want)
	}
	stillImports(t, ns)
}

// TestRawThatLooksLikeQcow2IsRefused: a file that starts with the qcow2 magic is a qcow2
// to Ferry, whatever its uploader meant: it is never imported as raw (whatever later
// probed it would follow its header). With a hostile or bogus header it is refused with
// the header's fault.
func TestRawThatLooksLikeQcow2IsRefused(t *testing.T) {
	ns := newNamespace(t)
	version := qcow2Crafted(t, ns+"-v9.raw", false, 0, 0, "")
	b, _ := os.ReadFile(version)
	binary.BigEndian.PutUint32(b[4:], 9)
	if err := os.WriteFile(version, b, 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(imagesDir, ns+"-short.raw")
	if err := os.WriteFile(short, []byte("QFI\xfb\x00\x00\x00\x03"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ path, want string }{
		"backing":  {qcow2Crafted(t, ns+"-backing.raw", true, 0, 0, "/etc/hostname"), "backing file"},
		"version":  {version, "qcow2 version 9 is not supported"},
		"short":    {short, "truncated"},
		"unknown":  {qcow2Crafted(t, ns+"-ext.raw", false, 0x12345678, 0, "x"), "unknown extension"},
		"corrupt":  {qcow2Crafted(t, ns+"-corrupt.raw", false, 0, 1<<1, ""), "corrupt"},
		"no-table": {qcow2Crafted(t, ns+"-bogus.raw", false, 0, 0, ""), "qemu-img info"},
	}
	for name, c := range cases {
		createAll(t, fileImage(ns+"-"+name, c.path))
	}
	for name, c := range cases {
		refusedFor(t, ns+"-"+name, c.want)
	}
	stillImports(t, ns)
}

// TestTenGiBDownloadIsRefused: a loopback server offering 10 GiB, once with a
// Content-Length (refused before the body is read) and once as an endless chunked stream
// of zeroes (refused at the controller's cap, 64 MiB here: the default is 64 GiB), fails
// the image with the limit named, and no partial file is left.
func TestTenGiBDownloadIsRefused(t *testing.T) {
	ns := newNamespace(t)
	var sentChunked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", fmt.Sprint(int64(10<<30)))
		}
		buf := make([]byte, 1<<20)
		buf[510], buf[511] = 0x55, 0xAA
		for r.Context().Err() == nil {
			n, err := w.Write(buf)
			if r.URL.Path == "/chunked" {
				sentChunked.Add(int64(n))
			}
			if err != nil {
				return
			}
			buf[510], buf[511] = 0, 0
		}
	}))
	defer srv.Close()
	for _, path := range []string{"sized", "chunked"} {
		createAll(t, httpImageTo(ns+"-"+path, srv.URL+"/"+path))
	}
	refusedFor(t, ns+"-sized", "the server announces 10737418240 bytes (10.0 GiB), more than the controller's limit of 64Mi (--max-image-size)")
	refusedFor(t, ns+"-chunked", "larger than the controller's limit of 64Mi (--max-image-size)")
	// The stream was cut near the cap, not read to its end: what the server got out is
	// the cap and what the sockets' buffers held.
	if n := sentChunked.Load(); n > 2*testMaxImageSize {
		t.Errorf("the chunked server sent %d bytes, more than twice the %d cap", n, testMaxImageSize)
	} else {
		t.Logf("the chunked server sent %d MiB before the controller hung up", n>>20)
	}
	stillImports(t, ns)
}

// TestFileSourcesOutsideTheListedDirsAreRefused: file:// URLs of a host file, of a file
// reached by "..", by a symlink out of the sources directory or into the storage fail
// with the reason; the controller imports a good image after.
func TestFileSourcesOutsideTheListedDirsAreRefused(t *testing.T) {
	ns := newNamespace(t)
	outside := filepath.Join(filepath.Dir(imagesDir), ns+"-outside.raw")
	b := make([]byte, 1<<20)
	b[510], b[511] = 0x55, 0xAA // a bootable raw disk: refused for where it is, not what
	if err := os.WriteFile(outside, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(outside) })
	escape := filepath.Join(imagesDir, ns+"-escape.raw")
	if err := os.Symlink(outside, escape); err != nil {
		t.Fatal(err)
	}
	// A tenant's disk in the storage, reached by a symlink from the sources directory.
	planted := filepath.Join(storageDir, ns+"-disk.qcow2")
	if err := os.WriteFile(planted, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(planted) })
	toStorage := filepath.Join(imagesDir, ns+"-storage")
	if err := os.Symlink(storageDir, toStorage); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ path, want string }{
		"hostname": {"/etc/hostname", "outside the directories the controller reads image files from"},
		"dotdot":   {imagesDir + "/../" + filepath.Base(outside), "outside the directories"},
		"symlink":  {escape, "through a symlink: it is " + outside},
		"storage":  {toStorage + "/" + filepath.Base(planted), "in the controller's storage"},
		"missing":  {toStorage + "/images/not-yet.img", "in the controller's storage"},
	}
	for name, c := range cases {
		createAll(t, fileImage(ns+"-"+name, c.path))
	}
	for name, c := range cases {
		refusedFor(t, ns+"-"+name, c.want)
	}
	stillImports(t, ns)
}

func httpImageTo(name, url string) *v1alpha2.ClusterVirtualImage {
	img := fileImage(name, "")
	img.Spec.DataSource.HTTP.URL = url
	return img
}

// TestImportsKeepOffTheClusterNetworks: an image or disk whose URL leads to an address
// the controller's import policy denies (here 127.0.0.2: the harness allows only
// 127.0.0.1 of loopback, as ferry up allows loopback but its own services' ports) fails
// with the reason and the flag that would allow it, without a byte sent there: asked
// directly, through a redirect from an allowed server, on a tenant's VirtualDisk, and at
// a cloud's metadata address.
func TestImportsKeepOffTheClusterNetworks(t *testing.T) {
	ns := newNamespace(t)
	var hits atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	inside := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("the cluster's secret"))
	}))
	inside.Listener.Close()
	inside.Listener = ln
	inside.Start()
	defer inside.Close()
	redirect := httptest.NewServer(http.RedirectHandler(inside.URL+"/metrics", http.StatusFound))
	defer redirect.Close()

	createAll(t, httpImageTo(ns+"-direct", inside.URL+"/disk.img"), httpImageTo(ns+"-redirect", redirect.URL+"/disk.img"),
		httpImageTo(ns+"-metadata", "http://169.254.169.254/latest/meta-data/"))
	vd := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "stolen"}, Spec: v1alpha2.VirtualDiskSpec{
		DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: inside.URL + "/disk.img"}}}}
	createAll(t, vd)

	want := "the controller does not connect to " + strings.TrimPrefix(inside.URL, "http://")
	refusedFor(t, ns+"-direct", want)
	refusedFor(t, ns+"-redirect", want)
	refusedFor(t, ns+"-metadata", "the controller does not connect to 169.254.169.254:80: it is in 169.254.0.0/16")
	got := waitDisk(t, ns, "stolen", v1alpha2.ImageFailed)
	if msg := imageReadyMessage(got.Status.Conditions); !strings.Contains(msg, want) || !strings.Contains(msg, "--import-allowed-networks") {
		t.Errorf("the tenant's disk fails with %q, want it to say %q and the flag that allows it", msg, want)
	} else {
		t.Logf("stolen: %s", msg)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the denied server got %d requests", n)
	}
	stillImports(t, ns)
}
