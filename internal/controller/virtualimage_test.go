package controller_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/storage"
)

func newVI(ns, name string, ds v1alpha2.DataSource) *v1alpha2.VirtualImage {
	return &v1alpha2.VirtualImage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha2.VirtualImageSpec{DataSource: ds, Storage: v1alpha2.StorageContainerRegistry}}
}

// httpSource serves a file from a loopback HTTP server for the test's duration: a
// namespace's objects take no file:// URL.
func httpSource(t *testing.T, path string) v1alpha2.DataSource {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, path) }))
	t.Cleanup(srv.Close)
	return v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: srv.URL + "/image"}}
}

func refSource(kind, name, ns string) *v1alpha2.DataSource {
	return &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef, ObjectRef: &v1alpha2.ObjectRefSource{Kind: kind, Name: name, Namespace: ns}}
}

func waitVI(t *testing.T, ns, name string, phase v1alpha2.ImagePhase) *v1alpha2.VirtualImage {
	t.Helper()
	vi := &v1alpha2.VirtualImage{}
	eventually(t, timeout, "VirtualImage "+name+" "+string(phase), func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vi)
		return vi.Status.Phase == phase, fmt.Sprintf("%s %v", vi.Status.Phase, vi.Status.Conditions)
	})
	return vi
}

// qemuInfo is qemu-img's account of a file Ferry wrote.
func qemuInfo(t *testing.T, path string) (virtualSize int64, backing string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-U", "--output=json", "-f", "qcow2", path).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", path, err)
	}
	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Backing     string `json:"backing-filename"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info.VirtualSize, info.Backing
}

// TestVirtualImageImportAndAttach: a VirtualImage imports into the storage under its
// namespace, name and UID, says that Ferry keeps it as a file whatever spec.storage
// asks for, and a VM of its namespace boots it read-only; a VM of another namespace
// does not find it.
func TestVirtualImageImportAndAttach(t *testing.T) {
	ns, other := newNamespace(t), newNamespace(t)
	file := sourceFile(t, ns+"-vi.qcow2", "-f", "qcow2", "1M")
	vi := newVI(ns, "debian", httpSource(t, file))
	vi.Spec.Storage = v1alpha2.StoragePersistentVolumeClaim
	vm := newVM(ns, "vm", "root", "")
	vm.Spec.BlockDeviceRefs = []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.ImageDevice, Name: "debian"}}
	stranger := newVM(other, "vm", "root", "")
	stranger.Spec.BlockDeviceRefs = []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.ImageDevice, Name: "debian"}}
	hostFile := newVI(ns, "host-file", v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: "file://" + file}})
	createAll(t, vi, vm, stranger, hostFile)
	vi = waitVI(t, ns, "debian", v1alpha2.ImageReady)
	// file:// reads the operator's directories: for ClusterVirtualImages only.
	if msg := imageReadyMessage(waitVI(t, ns, "host-file", v1alpha2.ImageFailed).Status.Conditions); !strings.Contains(msg, "file:// URLs are for ClusterVirtualImages only") {
		t.Errorf("a VirtualImage from a file:// URL says %q", msg)
	}
	want := storage.VirtualImagePath(storageDir, vi)
	if vi.Status.Path != want || vi.Status.Format != "qcow2" || vi.Status.Size.UnpackedBytes != "1048576" || vi.Status.Progress != "100%" {
		t.Errorf("VirtualImage status %+v, want path %s", vi.Status, want)
	}
	if !strings.Contains(want, "/virtualimages/"+ns+"/debian-") {
		t.Errorf("the image's file %s is not under its namespace", want)
	}
	c := meta.FindStatusCondition(vi.Status.Conditions, v1alpha2.ImageConditionStorageReady)
	if c == nil || !strings.Contains(c.Message, "PersistentVolumeClaim") || !strings.Contains(c.Message, "file") {
		t.Errorf("StorageReady %+v does not say where the image is kept", c)
	}
	pod := waitPod(t, ns, "vm")
	if args := strings.Join(pod.Spec.Containers[0].Args, " "); !strings.Contains(args, "--disk "+want+":qcow2:ro") {
		t.Errorf("launcher args %q do not attach %s read-only", args, want)
	}
	eventually(t, timeout, "the other namespace's VM does not find the image", func() (bool, string) {
		c := meta.FindStatusCondition(getVM(t, other, "vm").Status.Conditions, v1alpha2.VMConditionBlockDevicesReady)
		if c == nil {
			return false, "no condition"
		}
		return c.Reason == v1alpha2.ReasonDiskNotFound && strings.Contains(c.Message, "VirtualImage debian"), c.Message
	})
	// A VirtualImage's objectRef names its own namespace only.
	bad := newVI(ns, "elsewhere", *refSource(v1alpha2.VirtualImageKind, "debian", other))
	if err := k8s.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "objectRef.namespace") {
		t.Errorf("a VirtualImage naming another namespace was not refused: %v", err)
	}
}

// TestObjectRefChains: a VirtualImage made from a ClusterVirtualImage, a disk from that
// VirtualImage (an overlay of its file), an image from that disk (flattened: it names
// no file) and a disk from it; a ClusterVirtualImage from a namespace's VirtualImage.
// Each records its source's UID. A deleted image keeps its file while a disk made
// from it exists.
func TestObjectRefChains(t *testing.T) {
	ns := newNamespace(t)
	cvi := fileImage(ns+"-base", sourceFile(t, ns+"-base.qcow2", "-f", "qcow2", "1M"))
	fromCVI := newVI(ns, "from-cvi", *refSource(v1alpha2.ClusterVirtualImageKind, cvi.Name, ""))
	disk := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "disk"},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: refSource(v1alpha2.VirtualImageKind, "from-cvi", "")}}
	q := resource.MustParse("8Mi")
	disk.Spec.PersistentVolumeClaim.Size = &q
	fromDisk := newVI(ns, "from-disk", *refSource(v1alpha2.VirtualDiskKind, "disk", ""))
	copyDisk := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "copy"},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: refSource(v1alpha2.VirtualImageKind, "from-disk", "")}}
	clusterFromVI := &v1alpha2.ClusterVirtualImage{ObjectMeta: metav1.ObjectMeta{Name: ns + "-from-vi"},
		Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: *refSource(v1alpha2.VirtualImageKind, "from-cvi", ns)}}
	createAll(t, cvi, fromCVI, disk, fromDisk, copyDisk, clusterFromVI)

	base := waitImage(t, cvi.Name, v1alpha2.ImageReady)
	vi := waitVI(t, ns, "from-cvi", v1alpha2.ImageReady)
	if vi.Status.SourceUID != base.UID || vi.Status.Format != "qcow2" {
		t.Errorf("VirtualImage from a ClusterVirtualImage: sourceUID %q (want %q), format %q", vi.Status.SourceUID, base.UID, vi.Status.Format)
	}
	vd := waitDisk(t, ns, "disk", v1alpha2.ImageReady)
	if size, backing := qemuInfo(t, vd.Status.Path); size != 8<<20 || backing != storage.VirtualImagePath(storageDir, vi) {
		t.Errorf("disk from a VirtualImage: %d bytes backed by %q", size, backing)
	}
	if vd.Status.SourceUID != vi.UID {
		t.Errorf("disk sourceUID %q, want %q", vd.Status.SourceUID, vi.UID)
	}
	img := waitVI(t, ns, "from-disk", v1alpha2.ImageReady)
	if size, backing := qemuInfo(t, img.Status.Path); size != 8<<20 || backing != "" || img.Status.SourceUID != vd.UID {
		t.Errorf("image from a disk: %d bytes, backing %q, sourceUID %q; want 8Mi, none, %q", size, backing, img.Status.SourceUID, vd.UID)
	}
	cp := waitDisk(t, ns, "copy", v1alpha2.ImageReady)
	if cp.Status.Capacity != "8Mi" {
		t.Errorf("disk from the disk's image: capacity %s, want 8Mi", cp.Status.Capacity)
	}
	if c := waitImage(t, clusterFromVI.Name, v1alpha2.ImageReady); c.Status.SourceUID != vi.UID {
		t.Errorf("ClusterVirtualImage from a VirtualImage: sourceUID %q, want %q", c.Status.SourceUID, vi.UID)
	}
	noNS := clusterFromVI.DeepCopy()
	noNS.ObjectMeta = metav1.ObjectMeta{Name: ns + "-no-ns"}
	noNS.Spec.DataSource.ObjectRef.Namespace = ""
	if err := k8s.Create(ctx, noNS); err == nil || !strings.Contains(err.Error(), "namespace is required") {
		t.Errorf("a ClusterVirtualImage from a VirtualImage without a namespace was not refused: %v", err)
	}
	diskFromDisk := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "direct"},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: refSource(v1alpha2.VirtualDiskKind, "disk", "")}}
	if err := k8s.Create(ctx, diskFromDisk); err == nil || !strings.Contains(err.Error(), "make a VirtualDiskSnapshot of it") {
		t.Errorf("a disk made directly from a disk (Deckhouse has no such source) was not refused: %v", err)
	}

	// The VirtualImage the disk reads stays while the disk does.
	if err := k8s.Delete(ctx, vi); err != nil {
		t.Fatal(err)
	}
	kept := waitVI(t, ns, "from-cvi", v1alpha2.ImageTerminating)
	if msg := imageReadyMessage(kept.Status.Conditions); !strings.Contains(msg, ns+"/disk") {
		t.Errorf("a deleted image in use says %q", msg)
	}
	if _, err := os.Stat(vi.Status.Path); err != nil {
		t.Fatalf("the file of an image a disk reads was removed: %v", err)
	}
	if err := k8s.Delete(ctx, vd); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the image goes with its last disk", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(vi), &v1alpha2.VirtualImage{})
		_, serr := os.Stat(vi.Status.Path)
		return client.IgnoreNotFound(err) == nil && err != nil && os.IsNotExist(serr), fmt.Sprint(err, serr)
	})
}

// TestDiskFromHTTP: a disk with an HTTP source is imported and checked as an image is,
// then written as a qcow2 of its own (no backing file) of persistentVolumeClaim.size; a
// checksum that does not match fails the disk with the reason.
func TestDiskFromHTTP(t *testing.T) {
	ns := newNamespace(t)
	src := sourceFile(t, ns+"-http.qcow2", "-f", "qcow2", "2M")
	body, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	sum := sha256.Sum256(body)
	good := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "http"},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceHTTP,
			HTTP: &v1alpha2.HTTPSource{URL: srv.URL + "/disk.qcow2", Checksum: &v1alpha2.Checksum{SHA256: hex.EncodeToString(sum[:])}}}}}
	q := resource.MustParse("32Mi")
	good.Spec.PersistentVolumeClaim.Size = &q
	wrong := good.DeepCopy()
	wrong.Name = "wrong-sum"
	wrong.Spec.DataSource.HTTP.Checksum.SHA256 = strings.Repeat("0", 64)
	createAll(t, good, wrong)
	vd := waitDisk(t, ns, "http", v1alpha2.ImageReady)
	if size, backing := qemuInfo(t, vd.Status.Path); size != 32<<20 || backing != "" {
		t.Errorf("disk from HTTP: %d bytes, backing %q; want 32Mi and none", size, backing)
	}
	if vd.Status.Capacity != "32Mi" || vd.Status.Progress != "100%" || vd.Status.Path != storage.DiskPath(storageDir, vd) {
		t.Errorf("disk from HTTP: status %+v", vd.Status)
	}
	bad := waitDisk(t, ns, "wrong-sum", v1alpha2.ImageFailed)
	c := meta.FindStatusCondition(bad.Status.Conditions, v1alpha2.ImageConditionReady)
	if c == nil || c.Reason != v1alpha2.ReasonImportFailed || !strings.Contains(c.Message, "checksum mismatch") || !strings.Contains(c.Message, "sha256") {
		t.Errorf("a checksum mismatch says %+v", c)
	}
	if _, err := os.Stat(storage.DiskPath(storageDir, bad)); !os.IsNotExist(err) {
		t.Errorf("a refused disk has a file: %v", err)
	}
}

// TestChecksums: a VirtualImage whose checksum does not match fails with the reason;
// one with only a Streebog sum imports and says the sum was not checked.
func TestChecksums(t *testing.T) {
	ns := newNamespace(t)
	path := writeRawImage(t, ns+"-sum.raw")
	mismatch := newVI(ns, "md5", httpSource(t, path))
	mismatch.Spec.DataSource.HTTP.Checksum = &v1alpha2.Checksum{MD5: strings.Repeat("a", 32)}
	streebog := newVI(ns, "streebog", httpSource(t, path))
	streebog.Spec.DataSource.HTTP.Checksum = &v1alpha2.Checksum{Streebog256: strings.Repeat("b", 64)}
	createAll(t, mismatch, streebog)
	failed := waitVI(t, ns, "md5", v1alpha2.ImageFailed)
	if msg := imageReadyMessage(failed.Status.Conditions); !strings.Contains(msg, v1alpha2.ReasonImportFailed) || !strings.Contains(msg, "checksum mismatch") || !strings.Contains(msg, "md5") {
		t.Errorf("md5 mismatch says %q", msg)
	}
	ok := waitVI(t, ns, "streebog", v1alpha2.ImageReady)
	if msg := imageReadyMessage(ok.Status.Conditions); !strings.Contains(msg, "streebog checksum was not checked") {
		t.Errorf("a Streebog sum's image says %q", msg)
	}
}
