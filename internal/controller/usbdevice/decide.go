package usbdevice

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// AbsentMessage is Ready's message on every NodeUSBDevice and USBDevice.
const AbsentMessage = "The device is absent on every node: Ferry does not discover USB devices on nodes (it has no USB passthrough), so no VM can use it."

// Ownership is whose a USBDevice named after a NodeUSBDevice is.
type Ownership int

const (
	// Foreign: no controller owner reference to a NodeUSBDevice of its name: not made by
	// Ferry, never overwritten nor deleted.
	Foreign Ownership = iota
	// Ours: controlled by this NodeUSBDevice.
	Ours
	// Stale: controlled by an earlier NodeUSBDevice of the same name, deleted since.
	Stale
)

// OwnerOf tells whose u is, against the NodeUSBDevice name (uid "": none exists now).
func OwnerOf(u *v1alpha2.USBDevice, name string, uid types.UID) Ownership {
	ref := metav1.GetControllerOf(u)
	if ref == nil || ref.Kind != v1alpha2.NodeUSBDeviceKind || ref.Name != name || u.Name != name ||
		!strings.HasPrefix(ref.APIVersion, v1alpha2.GroupVersion.Group+"/") {
		return Foreign
	}
	if uid != "" && ref.UID == uid {
		return Ours
	}
	return Stale
}

// ToRemove picks, among devices, the USBDevices Ferry made for the NodeUSBDevice name
// that it must not have: all when it is gone (uid "") or assigned to no namespace, else
// those outside its assigned namespace or made for an earlier NodeUSBDevice of its name.
func ToRemove(devices []v1alpha2.USBDevice, name string, uid types.UID, assigned string) []*v1alpha2.USBDevice {
	var out []*v1alpha2.USBDevice
	for i := range devices {
		u := &devices[i]
		switch OwnerOf(u, name, uid) {
		case Foreign:
			continue
		case Ours:
			if assigned != "" && u.Namespace == assigned {
				continue
			}
		}
		out = append(out, u)
	}
	return out
}

// NewUSBDevice is the USBDevice Ferry makes in n's assigned namespace.
func NewUSBDevice(n *v1alpha2.NodeUSBDevice) *v1alpha2.USBDevice {
	return &v1alpha2.USBDevice{ObjectMeta: metav1.ObjectMeta{
		Name: n.Name, Namespace: n.Spec.AssignedNamespace,
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: v1alpha2.GroupVersion.String(), Kind: v1alpha2.NodeUSBDeviceKind,
			Name: n.Name, UID: n.UID, Controller: ptr.To(true),
		}},
	}}
}

// Assignment is what became of a NodeUSBDevice's spec.assignedNamespace.
type Assignment struct {
	// Made: the USBDevice is in the assigned namespace.
	Made bool
	// Waiting says why it is not (Made false, a namespace assigned).
	Waiting string
	// Device is the USBDevice (Made), whose Attached the NodeUSBDevice shows.
	Device *v1alpha2.USBDevice
}

// NodeStatus is n's status given its assignment: Ready False (NotFound), Assigned and
// Attached. Conditions that do not change keep their transition times.
func NodeStatus(n *v1alpha2.NodeUSBDevice, a Assignment) v1alpha2.NodeUSBDeviceStatus {
	st := *n.Status.DeepCopy()
	gen := n.Generation
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	set(v1alpha2.USBConditionReady, metav1.ConditionFalse, v1alpha2.ReasonUSBNotFound, AbsentMessage)
	ns := n.Spec.AssignedNamespace
	switch {
	case ns == "":
		set(v1alpha2.USBConditionAssigned, metav1.ConditionFalse, v1alpha2.ReasonUSBAssignedAvailable,
			"No namespace is assigned to the device: set spec.assignedNamespace to make a USBDevice of the same name there.")
		set(v1alpha2.USBConditionAttached, metav1.ConditionFalse, v1alpha2.ReasonUSBAttachedAvailable,
			"The device is assigned to no namespace, so no VM uses it.")
	case a.Made:
		set(v1alpha2.USBConditionAssigned, metav1.ConditionTrue, v1alpha2.ReasonUSBAssigned,
			fmt.Sprintf("Namespace %s is assigned: USBDevice %s/%s is there.", ns, ns, n.Name))
		att := (*metav1.Condition)(nil)
		if a.Device != nil {
			att = meta.FindStatusCondition(a.Device.Status.Conditions, v1alpha2.USBConditionAttached)
		}
		if att != nil {
			set(v1alpha2.USBConditionAttached, att.Status, att.Reason, att.Message)
		} else {
			set(v1alpha2.USBConditionAttached, metav1.ConditionFalse, v1alpha2.ReasonUSBAttachedAvailable,
				fmt.Sprintf("Waiting for the attachment status of USBDevice %s/%s.", ns, n.Name))
		}
	default:
		set(v1alpha2.USBConditionAssigned, metav1.ConditionFalse, v1alpha2.ReasonUSBAssignedInProgress, a.Waiting)
		set(v1alpha2.USBConditionAttached, metav1.ConditionFalse, v1alpha2.ReasonUSBAttachedAvailable,
			fmt.Sprintf("USBDevice %s/%s is not made, so no VM uses the device.", ns, n.Name))
	}
	st.ObservedGeneration = gen
	return st
}

// DeviceStatus is u's status: Ready as its NodeUSBDevice's (owner; nil when it has none),
// Attached False, saying which VMs of its namespace name it (vms).
func DeviceStatus(u *v1alpha2.USBDevice, owner *v1alpha2.NodeUSBDevice, vms []string) v1alpha2.USBDeviceStatus {
	st := *u.Status.DeepCopy()
	gen := u.Generation
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	var ready *metav1.Condition
	if owner != nil {
		ready = meta.FindStatusCondition(owner.Status.Conditions, v1alpha2.USBConditionReady)
		st.NodeName, st.Attributes = owner.Status.NodeName, owner.Status.Attributes
	} else {
		st.NodeName, st.Attributes = "", v1alpha2.NodeUSBDeviceAttributes{}
	}
	switch {
	case ready != nil:
		set(v1alpha2.USBConditionReady, ready.Status, ready.Reason, ready.Message)
	case owner != nil:
		set(v1alpha2.USBConditionReady, metav1.ConditionFalse, v1alpha2.ReasonUSBNotFound, AbsentMessage)
	default:
		set(v1alpha2.USBConditionReady, metav1.ConditionFalse, v1alpha2.ReasonUSBNotFound,
			"No NodeUSBDevice made this USBDevice (it has no owner reference to one), and "+lowerFirst(AbsentMessage))
	}
	if len(vms) == 0 {
		set(v1alpha2.USBConditionAttached, metav1.ConditionFalse, v1alpha2.ReasonUSBAttachedAvailable,
			"No VirtualMachine of the namespace names the device in spec.usbDevices.")
	} else {
		// Deckhouse's closest reason: it says Available while a VM asks for the device and
		// it is not attached yet. NoFreeUSBIPPort (a node out of USBIP ports) and
		// DetachedForMigration would say something false here.
		sorted := append([]string(nil), vms...)
		sort.Strings(sorted)
		what := "VirtualMachine " + quoteList(sorted) + " names"
		if len(sorted) > 1 {
			what = "VirtualMachines " + quoteList(sorted) + " name"
		}
		set(v1alpha2.USBConditionAttached, metav1.ConditionFalse, v1alpha2.ReasonUSBAttachedAvailable,
			what+" the device in spec.usbDevices, but it cannot be attached: it is absent on every node (Ferry has no USB passthrough), and a VM that names it does not start.")
	}
	st.ObservedGeneration = gen
	return st
}

// VMsNaming returns the names of the VMs that name the USBDevice name in spec.usbDevices.
func VMsNaming(vms []v1alpha2.VirtualMachine, name string) []string {
	var out []string
	for i := range vms {
		for _, d := range vms[i].Spec.USBDevices {
			if d.Name == name {
				out = append(out, vms[i].Name)
				break
			}
		}
	}
	return out
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}
