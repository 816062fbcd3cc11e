package controller_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestBrokenImageSaysSo: an image that is no disk fails to import, its disk fails, and the
// VM's condition names the cause; nothing starts.
func TestBrokenImageSaysSo(t *testing.T) {
	ns := newNamespace(t)
	junk := filepath.Join(imagesDir, ns+"-junk.img")
	if err := os.WriteFile(junk, []byte(strings.Repeat("not a disk ", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	img := &v1alpha2.ClusterVirtualImage{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-junk"},
		Spec:       v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: "file://" + junk}}},
	}
	vd := &v1alpha2.VirtualDisk{
		ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: ns},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
			ObjectRef: &v1alpha2.ObjectRefSource{Kind: "ClusterVirtualImage", Name: img.Name}}},
	}
	for _, o := range []client.Object{img, vd, newVM(ns, "vm", "root", "")} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, timeout, "image Failed", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(img), img)
		return img.Status.Phase == v1alpha2.ImageFailed, string(img.Status.Phase)
	})
	if c := meta.FindStatusCondition(img.Status.Conditions, v1alpha2.ImageConditionReady); c == nil || !strings.Contains(c.Message, "boot sector") {
		t.Errorf("image condition %+v does not explain", c)
	}
	eventually(t, timeout, "VM condition names the broken image", func() (bool, string) {
		vm := getVM(t, ns, "vm")
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionBlockDevicesReady)
		if c == nil {
			return false, "no condition"
		}
		return c.Reason == v1alpha2.ReasonImageFailed && strings.Contains(c.Message, img.Name), fmt.Sprintf("%s: %s", c.Reason, c.Message)
	})
	if n := len(livePods(t, ns, "vm")); n != 0 {
		t.Errorf("%d pods for a VM without a disk", n)
	}
}

// TestDiskIsProvisionedFromImage: a disk is a qcow2 file on the storage, backed by its image.
func TestDiskIsProvisionedFromImage(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	var vd v1alpha2.VirtualDisk
	eventually(t, timeout, "disk Ready", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "root"}, &vd)
		return vd.Status.Phase == v1alpha2.ImageReady, string(vd.Status.Phase)
	})
	if !strings.HasPrefix(vd.Status.Path, storageDir) {
		t.Errorf("disk path %s outside storage %s", vd.Status.Path, storageDir)
	}
	b, err := os.ReadFile(vd.Status.Path)
	if err != nil || len(b) < 4 || string(b[:4]) != "QFI\xfb" {
		t.Fatalf("disk file is not qcow2: %v", err)
	}
	if vd.Status.Capacity != "1Mi" {
		t.Errorf("capacity %s, want the image's 1Mi", vd.Status.Capacity)
	}
	if err := k8s.Delete(ctx, &vd); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "disk file removed", func() (bool, string) {
		_, err := os.Stat(vd.Status.Path)
		return os.IsNotExist(err), fmt.Sprint(err)
	})
}

// sourceFile writes a test image with the real qemu-img into the sources directory.
func sourceFile(t *testing.T, name string, args ...string) string {
	t.Helper()
	p := filepath.Join(imagesDir, name)
	args = append(args[:len(args)-1:len(args)-1], p, args[len(args)-1])
	if out, err := exec.Command("qemu-img", append([]string{"create", "-q"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create %v: %v: %s", args, err, out)
	}
	return p
}

func fileImage(name, path string) *v1alpha2.ClusterVirtualImage {
	return &v1alpha2.ClusterVirtualImage{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: "file://" + path}}},
	}
}

func diskFromImage(ns, name, image, size string) *v1alpha2.VirtualDisk {
	vd := &v1alpha2.VirtualDisk{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
			ObjectRef: &v1alpha2.ObjectRefSource{Kind: "ClusterVirtualImage", Name: image}}},
	}
	if size != "" {
		q := resource.MustParse(size)
		vd.Spec.PersistentVolumeClaim.Size = &q
	}
	return vd
}

func createAll(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

func waitImage(t *testing.T, name string, phase v1alpha2.ImagePhase) *v1alpha2.ClusterVirtualImage {
	t.Helper()
	img := &v1alpha2.ClusterVirtualImage{}
	eventually(t, timeout, "image "+name+" "+string(phase), func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKey{Name: name}, img)
		return img.Status.Phase == phase, fmt.Sprintf("%s %v", img.Status.Phase, img.Status.Conditions)
	})
	return img
}

func waitDisk(t *testing.T, ns, name string, phase v1alpha2.ImagePhase) *v1alpha2.VirtualDisk {
	t.Helper()
	vd := &v1alpha2.VirtualDisk{}
	eventually(t, timeout, "disk "+name+" "+string(phase), func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vd)
		return vd.Status.Phase == phase, fmt.Sprintf("%s %v", vd.Status.Phase, vd.Status.Conditions)
	})
	return vd
}

func imageReadyMessage(conds []metav1.Condition) string {
	if c := meta.FindStatusCondition(conds, v1alpha2.ImageConditionReady); c != nil {
		return c.Reason + ": " + c.Message
	}
	return ""
}

// TestDiskGrowsToItsSize: a disk made from a 1 MiB qcow2 or raw image is as large as
// persistentVolumeClaim.size (the guest sees that size); a size below the image's is
// refused with a message that says how much to ask for.
func TestDiskGrowsToItsSize(t *testing.T) {
	ns := newNamespace(t)
	qcow := fileImage(ns+"-qcow", sourceFile(t, ns+".qcow2", "-f", "qcow2", "1M"))
	raw := fileImage(ns+"-raw", writeRawImage(t, ns+".raw"))
	createAll(t, qcow, raw,
		diskFromImage(ns, "from-qcow", qcow.Name, "64Mi"), diskFromImage(ns, "from-raw", raw.Name, "10Gi"),
		diskFromImage(ns, "too-small", raw.Name, "512Ki"))
	if img := waitImage(t, qcow.Name, v1alpha2.ImageReady); img.Status.Format != "qcow2" || img.Status.Size.UnpackedBytes != "1048576" || img.Status.Progress != "100%" {
		t.Errorf("qcow2 image status %+v", img.Status)
	}
	for name, want := range map[string]int64{"from-qcow": 64 << 20, "from-raw": 10 << 30} {
		vd := waitDisk(t, ns, name, v1alpha2.ImageReady)
		out, err := exec.Command("qemu-img", "info", "-U", "-f", "qcow2", "--output=json", vd.Status.Path).Output()
		if err != nil {
			t.Fatal(err)
		}
		var info struct {
			VirtualSize int64 `json:"virtual-size"`
		}
		if err := json.Unmarshal(out, &info); err != nil || info.VirtualSize != want {
			t.Errorf("%s: the disk file is %d bytes (%v), want %d", name, info.VirtualSize, err, want)
		}
		if q := resource.NewQuantity(want, resource.BinarySI).String(); vd.Status.Capacity != q {
			t.Errorf("%s: capacity %s, want %s", name, vd.Status.Capacity, q)
		}
	}
	vd := waitDisk(t, ns, "too-small", v1alpha2.ImageFailed)
	msg := imageReadyMessage(vd.Status.Conditions)
	if !strings.Contains(msg, "smaller than the image") || !strings.Contains(msg, "1Mi") {
		t.Errorf("too small a disk says %q", msg)
	}
	t.Logf("too small a disk: %s", msg)
}

// TestImagesThatNameHostFilesAreRefused: a qcow2 with a backing file or an external data
// file fails to import, and the condition says why.
func TestImagesThatNameHostFilesAreRefused(t *testing.T) {
	ns := newNamespace(t)
	base := sourceFile(t, ns+"-base.raw", "-f", "raw", "1M")
	backed := fileImage(ns+"-backed", sourceFile(t, ns+"-backed.qcow2", "-f", "qcow2", "-b", base, "-F", "raw", "1M"))
	data := fileImage(ns+"-data", sourceFile(t, ns+"-data.qcow2", "-f", "qcow2", "-o", "data_file="+filepath.Join(imagesDir, ns+"-data.bin"), "1M"))
	createAll(t, backed, data)
	for name, want := range map[string]string{backed.Name: "backing file", data.Name: "external data file"} {
		img := waitImage(t, name, v1alpha2.ImageFailed)
		c := meta.FindStatusCondition(img.Status.Conditions, v1alpha2.ImageConditionReady)
		if c == nil || c.Reason != v1alpha2.ReasonImportFailed || !strings.Contains(c.Message, want) {
			t.Fatalf("%s: condition %+v, want ImportFailed naming the %s", name, c, want)
		}
		t.Logf("%s: %s: %s", name, c.Reason, c.Message)
	}
}

// TestISOImageIsACDROM: an ISO imports as format iso with cdrom true; no VirtualDisk
// can be made from it; a VM that names it boots it as a read-only CD-ROM.
func TestISOImageIsACDROM(t *testing.T) {
	ns := newNamespace(t)
	b := make([]byte, 1<<20)
	copy(b[32769:], "CD001")
	p := filepath.Join(imagesDir, ns+".iso")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	iso := fileImage(ns+"-iso", p)
	empty := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: ns}}
	q := resource.MustParse("16Mi")
	empty.Spec.PersistentVolumeClaim.Size = &q
	vm := newVM(ns, "vm", "root", "")
	vm.Spec.BlockDeviceRefs = append(vm.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.ClusterImageDevice, Name: iso.Name})
	createAll(t, iso, diskFromImage(ns, "from-iso", iso.Name, "1Gi"), empty, vm)
	img := waitImage(t, iso.Name, v1alpha2.ImageReady)
	if img.Status.Format != "iso" || !img.Status.CDROM {
		t.Errorf("ISO image: format %q, cdrom %v", img.Status.Format, img.Status.CDROM)
	}
	vd := waitDisk(t, ns, "from-iso", v1alpha2.ImageFailed)
	msg := imageReadyMessage(vd.Status.Conditions)
	if !strings.Contains(msg, "ISO") {
		t.Errorf("a disk from an ISO says %q", msg)
	}
	t.Logf("a disk from an ISO: %s", msg)
	pod := waitPod(t, ns, "vm")
	args := strings.Join(pod.Spec.Containers[0].Args, " ")
	if !strings.Contains(args, "--disk "+img.Status.Path+":raw:ro:cdrom") {
		t.Errorf("launcher args %q do not attach %s read-only as raw", args, img.Status.Path)
	}
}

// TestHTTPImportRetriesAndChecks: over a real apiserver, a download refused once stays
// Provisioning with the attempt and the error in status, then is Ready after the first
// back-off (10 s) with its checksum checked; a checksum that is no hex digest is refused
// by the CRD's validation.
func TestHTTPImportRetriesAndChecks(t *testing.T) {
	b := make([]byte, 1<<20)
	b[510], b[511] = 0x55, 0xAA
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.Write(b)
	}))
	defer srv.Close()
	sum := sha256.Sum256(b)
	img := &v1alpha2.ClusterVirtualImage{
		ObjectMeta: metav1.ObjectMeta{Name: newNamespace(t) + "-http"},
		Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{
			URL: srv.URL + "/disk.img", Checksum: &v1alpha2.Checksum{SHA256: hex.EncodeToString(sum[:])}}}},
	}
	bad := img.DeepCopy()
	bad.Name += "-bad"
	bad.Spec.DataSource.HTTP.Checksum.SHA256 = "not-hex"
	if err := k8s.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("a checksum that is no hex digest was not refused: %v", err)
	}
	createAll(t, img)
	eventually(t, timeout, "the first attempt recorded", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(img), img)
		rt := img.Status.ImportRetry
		return img.Status.Phase == v1alpha2.ImageProvisioning && rt != nil && rt.Attempts == 1 && strings.Contains(rt.LastError, "503"),
			fmt.Sprintf("%s %+v", img.Status.Phase, rt)
	})
	t.Logf("while retrying: %s", imageReadyMessage(img.Status.Conditions))
	img = waitImage(t, img.Name, v1alpha2.ImageReady)
	if img.Status.ImportRetry != nil || img.Status.Progress != "100%" || img.Status.Format != "raw" || calls.Load() != 2 {
		t.Errorf("ready image: retry %+v, progress %q, format %q, %d downloads", img.Status.ImportRetry, img.Status.Progress, img.Status.Format, calls.Load())
	}
}

// TestFailedDownloadWaitsForItsBackoff: after a refused connection the image is not
// downloaded again before its first back-off (10 s) is over, whatever events its own
// status writes cause.
func TestFailedDownloadWaitsForItsBackoff(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: a refused connection
	img := &v1alpha2.ClusterVirtualImage{
		ObjectMeta: metav1.ObjectMeta{Name: newNamespace(t) + "-refused"},
		Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceHTTP,
			HTTP: &v1alpha2.HTTPSource{URL: "http://" + addr + "/x.img"}}},
	}
	createAll(t, img)
	eventually(t, timeout, "the first attempt recorded", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(img), img)
		return img.Status.ImportRetry != nil, fmt.Sprintf("%+v", img.Status)
	})
	// Proving that something does not happen takes a while: 5 s of the 10 s back-off.
	holdsFor(t, 5*time.Second, "one attempt within the first back-off", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(img), img); err != nil {
			return false, err.Error()
		}
		rt := img.Status.ImportRetry
		return rt != nil && rt.Attempts == 1 && strings.Contains(rt.LastError, "refused"), fmt.Sprintf("%+v", rt)
	})
}
