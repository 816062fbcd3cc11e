package controller_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// condOf formats one condition for a failure message.
func condOf(conds []metav1.Condition, typ string) (metav1.Condition, string) {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return metav1.Condition{}, typ + ": none"
	}
	return *c, fmt.Sprintf("%s: %s %s %q", typ, c.Status, c.Reason, c.Message)
}

// waitNodeUSB waits until the NodeUSBDevice's condition typ has status and reason, and
// returns it.
func waitNodeUSB(t *testing.T, name, typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, 20*time.Second, fmt.Sprintf("NodeUSBDevice %s %s=%s (%s)", name, typ, status, reason), func() (bool, string) {
		n := &v1alpha2.NodeUSBDevice{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
			return false, err.Error()
		}
		c, seen := condOf(n.Status.Conditions, typ)
		got = c
		return c.Status == status && c.Reason == reason && n.Status.ObservedGeneration == n.Generation, seen
	})
	return got
}

func editNodeUSB(t *testing.T, name string, edit func(*v1alpha2.NodeUSBDevice)) error {
	t.Helper()
	n := &v1alpha2.NodeUSBDevice{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
		t.Fatal(err)
	}
	edit(n)
	return k8s.Update(ctx, n)
}

// TestUSBDeviceGuide: the guide's NodeUSBDevice (test/e2e/testdata/guide/31-nodeusbdevice.yaml,
// assigned to the test's namespace) is accepted; Ferry discovers no USB device, so it is
// Ready False NotFound, saying why; its USBDevice appears in the namespace (Assigned True),
// not ready either. A VM naming it stays Pending and says the device is not ready;
// unassigned, the USBDevice goes and the VM says it is not found. A bad namespace name is
// refused, saying what to fix; a missing namespace and a USBDevice not Ferry's are said in
// Assigned; deleting the NodeUSBDevice removes its USBDevice.
func TestUSBDeviceGuide(t *testing.T) {
	ns := newNamespace(t)
	b, err := os.ReadFile(filepath.Join("..", "..", "test", "e2e", "testdata", "guide", "31-nodeusbdevice.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	nusb := &v1alpha2.NodeUSBDevice{}
	// The guide suite's namespace is this test's.
	if err := yaml.UnmarshalStrict([]byte(strings.ReplaceAll(string(b), "project-1", ns)), nusb); err != nil {
		t.Fatal(err)
	}
	const name = "logitech-webcam"
	if nusb.Name != name || nusb.Spec.AssignedNamespace != ns {
		t.Fatalf("the manifest makes %s assigned to %q", nusb.Name, nusb.Spec.AssignedNamespace)
	}
	if err := k8s.Create(ctx, nusb); err != nil {
		t.Fatalf("the guide's NodeUSBDevice does not apply: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, &v1alpha2.NodeUSBDevice{ObjectMeta: metav1.ObjectMeta{Name: name}}) })

	ready := waitNodeUSB(t, name, v1alpha2.USBConditionReady, metav1.ConditionFalse, v1alpha2.ReasonUSBNotFound)
	if !strings.Contains(ready.Message, "absent on every node") || !strings.Contains(ready.Message, "does not discover USB devices") {
		t.Errorf("Ready says %q", ready.Message)
	}
	waitNodeUSB(t, name, v1alpha2.USBConditionAssigned, metav1.ConditionTrue, v1alpha2.ReasonUSBAssigned)

	// The USBDevice in the namespace, owned by the NodeUSBDevice, not ready.
	waitUSB := func(want string) *v1alpha2.USBDevice {
		t.Helper()
		u := &v1alpha2.USBDevice{}
		eventually(t, 20*time.Second, "USBDevice "+ns+"/"+name+" Ready False NotFound, Attached "+want, func() (bool, string) {
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, u); err != nil {
				return false, err.Error()
			}
			r, rs := condOf(u.Status.Conditions, v1alpha2.USBConditionReady)
			a, as := condOf(u.Status.Conditions, v1alpha2.USBConditionAttached)
			return r.Status == metav1.ConditionFalse && r.Reason == v1alpha2.ReasonUSBNotFound &&
				a.Status == metav1.ConditionFalse && a.Reason == v1alpha2.ReasonUSBAttachedAvailable && strings.Contains(a.Message, want), rs + "; " + as
		})
		return u
	}
	u := waitUSB("No VirtualMachine")
	if ref := metav1.GetControllerOf(u); ref == nil || ref.Kind != "NodeUSBDevice" || ref.Name != name {
		t.Errorf("the USBDevice's owner references: %+v", u.OwnerReferences)
	}

	// A VM that names it does not start, and says the device is not ready.
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "cam-vm", "root", v1alpha2.AlwaysOn)
	vm.Spec.USBDevices = []v1alpha2.USBDeviceSpecRef{{Name: name}}
	createAll(t, vm)
	got := waitCondition(t, ns, "cam-vm", v1alpha2.VMConditionRunning, metav1.ConditionFalse, v1alpha2.ReasonUSBDeviceNotReady)
	run := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.VMConditionRunning)
	if got.Status.Phase != v1alpha2.MachinePending || !strings.Contains(run.Message, `USBDevice "logitech-webcam" is not ready: the device is absent on every node`) {
		t.Errorf("phase %s, Running says %q", got.Status.Phase, run.Message)
	}
	t.Logf("Running: %s", run.Message)
	waitUSB(`VirtualMachine "cam-vm" names the device`)
	waitNodeUSB(t, name, v1alpha2.USBConditionAttached, metav1.ConditionFalse, v1alpha2.ReasonUSBAttachedAvailable)
	if p := livePods(t, ns, "cam-vm"); len(p) != 0 {
		t.Fatalf("a launcher pod for a VM that waits for its USB device: %s", p[0].Name)
	}

	// Unassigned: the USBDevice goes, and the VM says it is not found.
	if err := editNodeUSB(t, name, func(n *v1alpha2.NodeUSBDevice) { n.Spec.AssignedNamespace = "" }); err != nil {
		t.Fatal(err)
	}
	waitNodeUSB(t, name, v1alpha2.USBConditionAssigned, metav1.ConditionFalse, v1alpha2.ReasonUSBAssignedAvailable)
	eventually(t, 20*time.Second, "the USBDevice gone", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1alpha2.USBDevice{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	got = waitCondition(t, ns, "cam-vm", v1alpha2.VMConditionRunning, metav1.ConditionFalse, v1alpha2.ReasonUSBDeviceNotFound)
	if run := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.VMConditionRunning); !strings.Contains(run.Message, `USBDevice "logitech-webcam" not found in namespace `+ns) {
		t.Errorf("Running says %q", run.Message)
	}

	// A namespace name that is not one is refused, saying what to fix.
	err = editNodeUSB(t, name, func(n *v1alpha2.NodeUSBDevice) { n.Spec.AssignedNamespace = "Bad_NS" })
	if err == nil || !strings.Contains(err.Error(), "assignedNamespace must be the name of a namespace") {
		t.Errorf("assignedNamespace Bad_NS: %v", err)
	}

	// A namespace that does not exist.
	if err := editNodeUSB(t, name, func(n *v1alpha2.NodeUSBDevice) { n.Spec.AssignedNamespace = "no-such-namespace" }); err != nil {
		t.Fatal(err)
	}
	c := waitNodeUSB(t, name, v1alpha2.USBConditionAssigned, metav1.ConditionFalse, v1alpha2.ReasonUSBAssignedInProgress)
	if !strings.Contains(c.Message, "Namespace no-such-namespace does not exist") {
		t.Errorf("Assigned says %q", c.Message)
	}

	// A USBDevice of that name that is not Ferry's is left alone.
	hand := &v1alpha2.USBDevice{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	createAll(t, hand)
	if err := editNodeUSB(t, name, func(n *v1alpha2.NodeUSBDevice) { n.Spec.AssignedNamespace = ns }); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "Assigned saying the USBDevice is not Ferry's", func() (bool, string) {
		n := &v1alpha2.NodeUSBDevice{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
			return false, err.Error()
		}
		c, seen := condOf(n.Status.Conditions, v1alpha2.USBConditionAssigned)
		return c.Status == metav1.ConditionFalse && c.Reason == v1alpha2.ReasonUSBAssignedInProgress && strings.Contains(c.Message, "not this NodeUSBDevice's"), seen
	})
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(hand), hand); err != nil || len(hand.OwnerReferences) != 0 {
		t.Errorf("the USBDevice made by hand: %v, owners %+v", err, hand.OwnerReferences)
	}
	// Deleted, Ferry makes the device's own in its place.
	if err := k8s.Delete(ctx, hand); err != nil {
		t.Fatal(err)
	}
	waitNodeUSB(t, name, v1alpha2.USBConditionAssigned, metav1.ConditionTrue, v1alpha2.ReasonUSBAssigned)
	waitUSB(`VirtualMachine "cam-vm" names the device`)

	// Deleting the NodeUSBDevice removes its USBDevice.
	if err := k8s.Delete(ctx, &v1alpha2.NodeUSBDevice{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the USBDevice gone with its NodeUSBDevice", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1alpha2.USBDevice{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}
