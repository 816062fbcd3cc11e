package usbdevice

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func node(name, uid, ns string) *v1alpha2.NodeUSBDevice {
	return &v1alpha2.NodeUSBDevice{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(uid), Generation: 3},
		Spec:       v1alpha2.NodeUSBDeviceSpec{AssignedNamespace: ns},
	}
}

func cond(t *testing.T, conds []metav1.Condition, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		t.Fatalf("no %s condition in %+v", typ, conds)
	}
	return *c
}

// TestOwnerOf: only a USBDevice controlled by a NodeUSBDevice of its own name is Ferry's;
// one of an earlier NodeUSBDevice of that name is stale.
func TestOwnerOf(t *testing.T) {
	n := node("cam", "u1", "p")
	ours := NewUSBDevice(n)
	if got := OwnerOf(ours, "cam", "u1"); got != Ours {
		t.Errorf("Ferry's own: %v", got)
	}
	if got := OwnerOf(ours, "cam", "u2"); got != Stale {
		t.Errorf("an earlier NodeUSBDevice's: %v", got)
	}
	if got := OwnerOf(ours, "cam", ""); got != Stale {
		t.Errorf("its NodeUSBDevice gone: %v", got)
	}
	hand := &v1alpha2.USBDevice{ObjectMeta: metav1.ObjectMeta{Name: "cam", Namespace: "p"}}
	if got := OwnerOf(hand, "cam", "u1"); got != Foreign {
		t.Errorf("made by hand: %v", got)
	}
	other := ours.DeepCopy()
	other.OwnerReferences[0].Kind = "ConfigMap"
	other.OwnerReferences[0].APIVersion = "v1"
	if got := OwnerOf(other, "cam", "u1"); got != Foreign {
		t.Errorf("controlled by another kind: %v", got)
	}
	notController := ours.DeepCopy()
	notController.OwnerReferences[0].Controller = nil
	if got := OwnerOf(notController, "cam", "u1"); got != Foreign {
		t.Errorf("an owner reference that is not the controller's: %v", got)
	}
	if ref := ours.OwnerReferences[0]; ref.APIVersion != "virtualization.deckhouse.io/v1alpha2" || ref.Kind != "NodeUSBDevice" || ref.UID != "u1" || ours.Namespace != "p" {
		t.Errorf("NewUSBDevice: %+v in %q", ref, ours.Namespace)
	}
}

// TestToRemove: unassigning or reassigning removes Ferry's USBDevice from the old
// namespace, never one that is not Ferry's, nor one of another device.
func TestToRemove(t *testing.T) {
	n := node("cam", "u1", "p")
	inP := *NewUSBDevice(n)
	inQ := *NewUSBDevice(node("cam", "u1", "q"))
	stale := *NewUSBDevice(node("cam", "u0", "p"))
	hand := v1alpha2.USBDevice{ObjectMeta: metav1.ObjectMeta{Name: "cam", Namespace: "r"}}
	otherDev := *NewUSBDevice(node("mouse", "u9", "p"))
	all := []v1alpha2.USBDevice{inP, inQ, hand, otherDev}
	names := func(us []*v1alpha2.USBDevice) string {
		var out []string
		for _, u := range us {
			out = append(out, u.Namespace+"/"+u.Name)
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		what     string
		devices  []v1alpha2.USBDevice
		uid      types.UID
		assigned string
		want     string
	}{
		{"assigned to p", all, "u1", "p", "q/cam"},
		{"unassigned", all, "u1", "", "p/cam q/cam"},
		{"deleted", all, "", "", "p/cam q/cam"},
		{"an earlier NodeUSBDevice's in the assigned namespace", []v1alpha2.USBDevice{stale}, "u1", "p", "p/cam"},
	} {
		if got := names(ToRemove(c.devices, "cam", c.uid, c.assigned)); got != c.want {
			t.Errorf("%s: removes %q, want %q", c.what, got, c.want)
		}
	}
}

// TestNodeStatus: Ready is always False NotFound, saying why; Assigned follows the
// assignment; a status that does not change stays equal (no write).
func TestNodeStatus(t *testing.T) {
	n := node("cam", "u1", "")
	st := NodeStatus(n, Assignment{})
	ready := cond(t, st.Conditions, v1alpha2.USBConditionReady)
	if ready.Status != metav1.ConditionFalse || ready.Reason != v1alpha2.ReasonUSBNotFound || !strings.Contains(ready.Message, "does not discover USB devices") {
		t.Errorf("Ready %+v", ready)
	}
	if c := cond(t, st.Conditions, v1alpha2.USBConditionAssigned); c.Status != metav1.ConditionFalse || c.Reason != v1alpha2.ReasonUSBAssignedAvailable {
		t.Errorf("unassigned: Assigned %+v", c)
	}
	if c := cond(t, st.Conditions, v1alpha2.USBConditionAttached); c.Status != metav1.ConditionFalse || c.Reason != v1alpha2.ReasonUSBAttachedAvailable {
		t.Errorf("unassigned: Attached %+v", c)
	}
	if st.ObservedGeneration != 3 || ready.ObservedGeneration != 3 {
		t.Errorf("observedGeneration %d, Ready's %d", st.ObservedGeneration, ready.ObservedGeneration)
	}
	n.Status = st
	if again := NodeStatus(n, Assignment{}); !equality.Semantic.DeepEqual(again, st) {
		t.Errorf("the same decision changed the status:\n%+v\n%+v", again, st)
	}

	n.Spec.AssignedNamespace = "p"
	u := NewUSBDevice(n)
	u.Status.Conditions = []metav1.Condition{{Type: v1alpha2.USBConditionAttached, Status: metav1.ConditionFalse, Reason: v1alpha2.ReasonUSBAttachedAvailable, Message: "VM x waits"}}
	st = NodeStatus(n, Assignment{Made: true, Device: u})
	if c := cond(t, st.Conditions, v1alpha2.USBConditionAssigned); c.Status != metav1.ConditionTrue || c.Reason != v1alpha2.ReasonUSBAssigned || !strings.Contains(c.Message, "p/cam") {
		t.Errorf("assigned: Assigned %+v", c)
	}
	if c := cond(t, st.Conditions, v1alpha2.USBConditionAttached); c.Message != "VM x waits" {
		t.Errorf("assigned: Attached %+v, want the USBDevice's", c)
	}

	st = NodeStatus(n, Assignment{Waiting: "Namespace p does not exist"})
	if c := cond(t, st.Conditions, v1alpha2.USBConditionAssigned); c.Status != metav1.ConditionFalse || c.Reason != v1alpha2.ReasonUSBAssignedInProgress || c.Message != "Namespace p does not exist" {
		t.Errorf("waiting: Assigned %+v", c)
	}
}

// TestDeviceStatus: a USBDevice's Ready is its NodeUSBDevice's; Attached is False, naming
// the VMs that wait for it.
func TestDeviceStatus(t *testing.T) {
	n := node("cam", "u1", "p")
	n.Status = NodeStatus(n, Assignment{Made: true})
	u := NewUSBDevice(n)
	st := DeviceStatus(u, n, nil)
	ready := cond(t, st.Conditions, v1alpha2.USBConditionReady)
	if ready.Status != metav1.ConditionFalse || ready.Reason != v1alpha2.ReasonUSBNotFound || ready.Message != AbsentMessage {
		t.Errorf("Ready %+v", ready)
	}
	if c := cond(t, st.Conditions, v1alpha2.USBConditionAttached); c.Status != metav1.ConditionFalse || c.Reason != v1alpha2.ReasonUSBAttachedAvailable || !strings.Contains(c.Message, "No VirtualMachine") {
		t.Errorf("no VM: Attached %+v", c)
	}
	u.Status = st
	if again := DeviceStatus(u, n, nil); !equality.Semantic.DeepEqual(again, st) {
		t.Errorf("the same decision changed the status")
	}

	vms := []v1alpha2.VirtualMachine{
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: v1alpha2.VirtualMachineSpec{USBDevices: []v1alpha2.USBDeviceSpecRef{{Name: "cam"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: v1alpha2.VirtualMachineSpec{USBDevices: []v1alpha2.USBDeviceSpecRef{{Name: "mouse"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1alpha2.VirtualMachineSpec{USBDevices: []v1alpha2.USBDeviceSpecRef{{Name: "mouse"}, {Name: "cam"}}}},
	}
	st = DeviceStatus(u, n, VMsNaming(vms, "cam"))
	c := cond(t, st.Conditions, v1alpha2.USBConditionAttached)
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha2.ReasonUSBAttachedAvailable ||
		!strings.Contains(c.Message, `VirtualMachines "a", "b" name the device`) || !strings.Contains(c.Message, "cannot be attached") {
		t.Errorf("VMs name it: Attached %+v", c)
	}

	st = DeviceStatus(&v1alpha2.USBDevice{ObjectMeta: metav1.ObjectMeta{Name: "cam", Namespace: "p"}}, nil, nil)
	if c := cond(t, st.Conditions, v1alpha2.USBConditionReady); c.Reason != v1alpha2.ReasonUSBNotFound || !strings.Contains(c.Message, "No NodeUSBDevice made this USBDevice") {
		t.Errorf("without a NodeUSBDevice: Ready %+v", c)
	}
}
