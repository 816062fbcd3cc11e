package controller_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestPassthroughDevicesAreAcceptedButWait: Deckhouse's spec.gpus and spec.usbDevices are
// accepted, but Ferry has no GPU or USB passthrough: the VM stays Pending with no launcher
// pod, GPUClassReady False (GPUClassNotFound) and the Running condition saying what to
// remove; status.usbDevices lists the devices, none attached. Without them the VM starts.
func TestPassthroughDevicesAreAcceptedButWait(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "gpu", "root", v1alpha2.AlwaysOn)
	vm.Spec.GPUs = []v1alpha2.GPUSpecRef{{GPUClassName: "nvidia-h100"}}
	vm.Spec.USBDevices = []v1alpha2.USBDeviceSpecRef{{Name: "usb-token"}}
	createAll(t, vm)

	got := waitCondition(t, ns, "gpu", v1alpha2.VMConditionGPUClassReady, metav1.ConditionFalse, v1alpha2.ReasonGPUClassNotFound)
	c := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.VMConditionGPUClassReady)
	if !strings.Contains(c.Message, `"nvidia-h100"`) || !strings.Contains(c.Message, "remove spec.gpus") {
		t.Errorf("GPUClassReady says %q", c.Message)
	}
	got = waitCondition(t, ns, "gpu", v1alpha2.VMConditionRunning, metav1.ConditionFalse, v1alpha2.ReasonGPUClassNotFound)
	run := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.VMConditionRunning)
	if got.Status.Phase != v1alpha2.MachinePending || !strings.Contains(run.Message, `USBDevice "usb-token" not found`) {
		t.Errorf("phase %s, Running says %q", got.Status.Phase, run.Message)
	}
	if len(got.Status.USBDevices) != 1 || got.Status.USBDevices[0].Name != "usb-token" || got.Status.USBDevices[0].Attached {
		t.Errorf("status.usbDevices %+v", got.Status.USBDevices)
	}
	if p := livePods(t, ns, "gpu"); len(p) != 0 {
		t.Fatalf("a launcher pod for a VM that waits for its GPU: %s", p[0].Name)
	}
	t.Logf("Running: %s", run.Message)

	// A bad GPUClass name is refused by the CRD.
	bad := newVM(ns, "badgpu", "root", v1alpha2.AlwaysOn)
	bad.Spec.GPUs = []v1alpha2.GPUSpecRef{{GPUClassName: "Not_A_Name"}}
	if err := k8s.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "gpuClassName") {
		t.Errorf("gpuClassName Not_A_Name: %v", err)
	}

	editVM(t, ns, "gpu", func(vm *v1alpha2.VirtualMachine) { vm.Spec.GPUs, vm.Spec.USBDevices = nil, nil })
	waitCondition(t, ns, "gpu", v1alpha2.VMConditionGPUClassReady, "", "")
	waitPod(t, ns, "gpu")
	if got := getVM(t, ns, "gpu"); len(got.Status.USBDevices) != 0 {
		t.Errorf("status.usbDevices %+v after they were removed", got.Status.USBDevices)
	}
}
