package controller_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// rewriteStatus changes an object's status as a client with access to the status
// subresource may (an admin's here; an attacker's in the threat this guards against).
func rewriteStatus[T client.Object](t *testing.T, obj T, change func(T)) {
	t.Helper()
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	orig := obj.DeepCopyObject().(T)
	change(obj)
	if err := k8s.Status().Patch(ctx, obj, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
}

// diskArgs are the --disk values of every launcher pod the VM ever had.
func diskArgs(t *testing.T, ns, vm string) []string {
	t.Helper()
	var list corev1.PodList
	if err := k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{v1alpha2.LabelVMName: vm}); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range list.Items {
		args := p.Spec.Containers[0].Args
		for i := range args[:max(len(args)-1, 0)] {
			if args[i] == "--disk" {
				out = append(out, args[i+1])
			}
		}
	}
	return out
}

// waitDiskRefused waits until the VM's BlockDevicesReady is False with reason DiskRefused and
// a message holding every one of words.
func waitDiskRefused(t *testing.T, ns, name string, words ...string) {
	t.Helper()
	eventually(t, timeout, "VM "+name+" refuses its disk", func() (bool, string) {
		c := meta.FindStatusCondition(getVM(t, ns, name).Status.Conditions, v1alpha2.VMConditionBlockDevicesReady)
		if c == nil {
			return false, "no BlockDevicesReady"
		}
		ok := c.Status == metav1.ConditionFalse && c.Reason == v1alpha2.ReasonDiskRefused
		for _, w := range words {
			ok = ok && strings.Contains(c.Message, w)
		}
		return ok, fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
	})
}

// TestRewrittenStatusPathNeverReachesTheLauncher: a VirtualDisk whose status.path was
// rewritten to /etc/shadow, and a ClusterVirtualImage whose status.path was rewritten to a
// file outside the storage (and its status.format to qcow2), do not start their VMs: each
// VM says which disk it refuses and why, holds no disk and gets no launcher pod. Once the
// statuses name the storage's own files again the VMs start, and their launchers get the
// files the storage derives, the image in the format its file has.
func TestRewrittenStatusPathNeverReachesTheLauncher(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	vd := waitDisk(t, ns, "root", v1alpha2.ImageReady)
	ownDisk := filepath.Join(storageDir, "disks", ns, "root-"+string(vd.UID)[:8]+".qcow2")
	if vd.Status.Path != ownDisk {
		t.Fatalf("the storage wrote status.path %s, want %s", vd.Status.Path, ownDisk)
	}
	outside := writeRawImage(t, ns+"-outside.img") // a readable file outside the storage
	img := fileImage(ns+"-cd", writeRawImage(t, ns+"-cd.img"))
	createAll(t, img)
	img = waitImage(t, img.Name, v1alpha2.ImageReady)
	ownImage := filepath.Join(storageDir, "images", img.Name+".img")
	if img.Status.Path != ownImage || img.Status.Format != "raw" {
		t.Fatalf("the storage wrote status.path %s, format %s; want %s, raw", img.Status.Path, img.Status.Format, ownImage)
	}

	rewriteStatus(t, vd, func(d *v1alpha2.VirtualDisk) { d.Status.Path = "/etc/shadow" })
	rewriteStatus(t, img, func(i *v1alpha2.ClusterVirtualImage) { i.Status.Path, i.Status.Format = outside, "qcow2" })

	// Off first: once the VMs show the refusal, the controller's cache holds the rewritten
	// statuses, and turning them on cannot race a start from an older read.
	diskVM := newVM(ns, "vm-disk", "root", v1alpha2.AlwaysOff)
	imageVM := newVM(ns, "vm-image", "", v1alpha2.AlwaysOff)
	imageVM.Spec.BlockDeviceRefs = []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.ClusterImageDevice, Name: img.Name}}
	createAll(t, diskVM, imageVM)
	waitDiskRefused(t, ns, "vm-disk", "VirtualDisk root", `status.path "/etc/shadow"`, ownDisk)
	waitDiskRefused(t, ns, "vm-image", "ClusterVirtualImage "+img.Name, fmt.Sprintf("status.path %q", outside), ownImage)
	for _, name := range []string{"vm-disk", "vm-image"} {
		vm := getVM(t, ns, name)
		orig := vm.DeepCopy()
		vm.Spec.RunPolicy = v1alpha2.AlwaysOn
		if err := k8s.Patch(ctx, vm, client.MergeFrom(orig)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, timeout, "the VMs say why they do not start", func() (bool, string) {
		var seen []string
		ok := true
		for _, name := range []string{"vm-disk", "vm-image"} {
			c := meta.FindStatusCondition(getVM(t, ns, name).Status.Conditions, v1alpha2.VMConditionRunning)
			if c == nil {
				ok = false
				continue
			}
			ok = ok && c.Reason == v1alpha2.ReasonDiskRefused && strings.Contains(c.Message, "refused")
			seen = append(seen, c.Reason+": "+c.Message)
		}
		return ok, strings.Join(seen, "; ")
	})
	eventually(t, timeout, "a Warning event on the VM", func() (bool, string) {
		got := eventReasons(t, ns, "VirtualMachine", "vm-disk")
		return strings.Contains(strings.Join(got, ","), v1alpha2.ReasonDiskRefused), fmt.Sprint(got)
	})
	holdsFor(t, 2*time.Second, "no launcher pod and no hold on the disk", func() (bool, string) {
		args := append(diskArgs(t, ns, "vm-disk"), diskArgs(t, ns, "vm-image")...)
		if len(args) > 0 {
			return false, fmt.Sprintf("launcher disks %q", args)
		}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(vd), vd); err != nil || len(vd.Status.AttachedToVirtualMachines) > 0 {
			return false, fmt.Sprintf("disk attachment %v %+v", err, vd.Status.AttachedToVirtualMachines)
		}
		return true, ""
	})

	// The storage's own paths back, the image's status.format still rewritten.
	rewriteStatus(t, vd, func(d *v1alpha2.VirtualDisk) { d.Status.Path = ownDisk })
	rewriteStatus(t, img, func(i *v1alpha2.ClusterVirtualImage) { i.Status.Path = ownImage })
	for vm, want := range map[string]string{"vm-disk": ownDisk + ":qcow2", "vm-image": ownImage + ":raw:ro"} {
		waitPod(t, ns, vm)
		if got := diskArgs(t, ns, vm); len(got) != 1 || got[0] != want {
			t.Errorf("VM %s: launcher disks %q, want [%s]", vm, got, want)
		}
	}
}
