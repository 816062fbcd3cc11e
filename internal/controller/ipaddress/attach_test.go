package ipaddress

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestChoose: which of the VMs that ask for a vmip uses it.
func TestChoose(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	vm := func(name string, age int, status string) *v1alpha2.VirtualMachine {
		v := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: name, UID: types.UID("u-" + name),
			CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(-age) * time.Minute))}}
		v.Spec.VirtualMachineIPAddressName = "ip"
		v.Status.VirtualMachineIPAddressName = status
		return v
	}
	ip := func(user, owner string) *v1alpha2.VirtualMachineIPAddress {
		i := vmip("a", "ip", v1alpha2.VirtualMachineIPAddressTypeAuto, "")
		i.Status.VirtualMachine = user
		if owner != "" {
			i.Labels = map[string]string{v1alpha2.LabelVirtualMachineUID: "u-" + owner}
			i.OwnerReferences = []metav1.OwnerReference{{APIVersion: "virtualization.deckhouse.io/v1alpha2", Kind: "VirtualMachine", Name: owner, UID: types.UID("u-" + owner), Controller: ptrTrue()}}
		}
		return i
	}
	for _, c := range []struct {
		name  string
		ip    *v1alpha2.VirtualMachineIPAddress
		cands []*v1alpha2.VirtualMachine
		want  string
	}{
		{"none", ip("", ""), nil, ""},
		{"the user keeps it", ip("young", ""), []*v1alpha2.VirtualMachine{vm("old", 9, ""), vm("young", 1, "")}, "young"},
		{"a gone user: the oldest", ip("gone", ""), []*v1alpha2.VirtualMachine{vm("young", 1, ""), vm("old", 9, "")}, "old"},
		{"the one that records it first", ip("", ""), []*v1alpha2.VirtualMachine{vm("old", 9, ""), vm("has", 1, "ip")}, "has"},
		{"then its maker", ip("", "maker"), []*v1alpha2.VirtualMachine{vm("old", 9, ""), vm("maker", 1, "")}, "maker"},
		{"same age: by name", ip("", ""), []*v1alpha2.VirtualMachine{vm("b", 1, ""), vm("a", 1, "")}, "a"},
	} {
		if got := Choose(c.ip, c.cands); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func ptrTrue() *bool { b := true; return &b }

// TestWants: which vmips a VM asks for.
func TestWants(t *testing.T) {
	owned := func(name string, typ v1alpha2.VirtualMachineIPAddressType, static string) *v1alpha2.VirtualMachineIPAddress {
		i := vmip("a", name, typ, static)
		i.Labels = map[string]string{v1alpha2.LabelVirtualMachineUID: "u-web"}
		i.OwnerReferences = []metav1.OwnerReference{{Kind: "VirtualMachine", Name: "web", UID: "u-web", Controller: ptrTrue()}}
		return i
	}
	web := func(name, legacy, status string) *v1alpha2.VirtualMachine {
		v := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web", UID: "u-web"}}
		v.Spec.VirtualMachineIPAddressName, v.Spec.VirtualMachineIPAddress, v.Status.VirtualMachineIPAddressName = name, legacy, status
		return v
	}
	const auto, static = v1alpha2.VirtualMachineIPAddressTypeAuto, v1alpha2.VirtualMachineIPAddressTypeStatic
	for _, c := range []struct {
		name string
		vm   *v1alpha2.VirtualMachine
		ip   *v1alpha2.VirtualMachineIPAddress
		want bool
	}{
		{"named", web("x", "", ""), vmip("a", "x", static, "10.66.10.5"), true},
		{"named in another namespace", web("x", "", ""), vmip("b", "x", static, "10.66.10.5"), false},
		{"recorded", web("", "", "x"), vmip("a", "x", auto, ""), true},
		{"its own Auto", web("", "", ""), owned("web-1", auto, ""), true},
		{"its own Auto, when it names another", web("x", "", ""), owned("web-1", auto, ""), false},
		{"its own Static of its address", web("", "10.66.10.5", ""), owned("web-1", static, "10.66.10.5"), true},
		{"its own Static of another address", web("", "10.66.10.6", ""), owned("web-1", static, "10.66.10.5"), false},
		{"its own Auto, when it asks for an address", web("", "10.66.10.6", ""), owned("web-1", auto, ""), false},
		{"another's", web("", "", ""), vmip("a", "web-2", auto, ""), false},
	} {
		if got := Wants(c.vm, c.ip); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
