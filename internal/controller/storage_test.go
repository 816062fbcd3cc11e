package controller_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
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
