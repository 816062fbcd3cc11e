package controller_test

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/registry"
)

// TestContainerImageFromLoopbackRegistry: a qcow2 pushed with `ferry registry push`
// (registry.Push) into a registry served on loopback, as `ferry up` serves one, becomes a
// Ready ClusterVirtualImage of dataSource.type ContainerImage, and a disk is made from it;
// an image that names no tag of the registry waits, saying why.
func TestContainerImageFromLoopbackRegistry(t *testing.T) {
	ns := newNamespace(t)
	dir := t.TempDir()
	qcow := sourceFile(t, ns+"-cd.qcow2", "-f", "qcow2", "2M")
	if _, err := registry.Push(dir, qcow, "disks/"+ns, "v1"); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	defer stop()
	addr, _, err := registry.Serve(rctx, dir, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	image := func(name, ref string) *v1alpha2.ClusterVirtualImage {
		return &v1alpha2.ClusterVirtualImage{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceContainerImage,
				ContainerImage: &v1alpha2.ContainerImageSource{Image: addr + "/" + ref}}},
		}
	}
	createAll(t, image(ns+"-cd", "disks/"+ns+":v1"), image(ns+"-absent", "disks/"+ns+":v2"), diskFromImage(ns, "root", ns+"-cd", "16Mi"))
	img := waitImage(t, ns+"-cd", v1alpha2.ImageReady)
	if img.Status.Format != "qcow2" || img.Status.Size.UnpackedBytes != "2097152" || img.Status.Progress != "100%" {
		t.Errorf("image status %+v", img.Status)
	}
	if vd := waitDisk(t, ns, "root", v1alpha2.ImageReady); vd.Status.Capacity != "16Mi" {
		t.Errorf("disk capacity %s, want 16Mi", vd.Status.Capacity)
	}
	absent := &v1alpha2.ClusterVirtualImage{}
	eventually(t, timeout, "the missing tag said in status", func() (bool, string) {
		_ = k8s.Get(ctx, client.ObjectKey{Name: ns + "-absent"}, absent)
		msg := imageReadyMessage(absent.Status.Conditions)
		return absent.Status.Phase == v1alpha2.ImageProvisioning && absent.Status.ImportRetry != nil && strings.Contains(msg, "MANIFEST_UNKNOWN"), string(absent.Status.Phase) + " " + msg
	})
}

// TestContainerImageValidation: the API refuses a ContainerImage source without
// containerImage, or beside another source, and an image reference Deckhouse's pattern
// refuses.
func TestContainerImageValidation(t *testing.T) {
	ns := newNamespace(t)
	for i, ds := range []v1alpha2.DataSource{
		{Type: v1alpha2.SourceContainerImage},
		{Type: v1alpha2.SourceContainerImage, ContainerImage: &v1alpha2.ContainerImageSource{Image: "r.io/a:b"}, HTTP: &v1alpha2.HTTPSource{URL: "http://x/y"}},
		{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: "http://x/y"}, ContainerImage: &v1alpha2.ContainerImageSource{Image: "r.io/a:b"}},
		{Type: v1alpha2.SourceContainerImage, ContainerImage: &v1alpha2.ContainerImageSource{Image: "r.io/a b"}},
	} {
		img := &v1alpha2.ClusterVirtualImage{ObjectMeta: metav1.ObjectMeta{Name: ns + "-bad-" + string(rune('a'+i))}, Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: ds}}
		if err := k8s.Create(ctx, img); err == nil {
			t.Errorf("data source %+v accepted", ds)
		}
	}
}
