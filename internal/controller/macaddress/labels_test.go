package macaddress

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func vmNamed(name string, uid types.UID, created time.Time, spec, status string) *v1alpha2.VirtualMachine {
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: uid, CreationTimestamp: metav1.NewTime(created)}}
	if spec != "" {
		vm.Spec.Networks = []v1alpha2.NetworksSpec{{Type: v1alpha2.NetworkTypeMain, VirtualMachineMACAddressName: spec}}
	}
	if status != "" {
		vm.Status.Networks = []v1alpha2.NetworksStatus{{Type: "Main", VirtualMachineMACAddressName: status}}
	}
	return vm
}

// TestWantsAndChoose: which VMs ask for a vmmac, and which of them gets it: the one it
// records, then one that records it, then its maker, then the oldest that names it.
func TestWantsAndChoose(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	own := &v1alpha2.VirtualMachineMACAddress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "maker-abcde",
		Labels:          map[string]string{v1alpha2.LabelVirtualMachineUID: "u-maker"},
		OwnerReferences: []metav1.OwnerReference{{Kind: "VirtualMachine", Name: "maker", UID: "u-maker", Controller: ptrTrue()}}}}
	maker := vmNamed("maker", "u-maker", t0.Add(time.Hour), "", "")
	if !Wants(maker, own) {
		t.Error("the maker that names none does not want its own vmmac")
	}
	if Wants(vmNamed("maker", "u-other", t0, "", ""), own) {
		t.Error("a VM of the maker's name but another UID wants its vmmac")
	}
	if Wants(vmNamed("maker", "u-maker", t0, "fixed", ""), own) {
		t.Error("the maker naming another vmmac still wants its own")
	}
	namer := vmNamed("namer", "u-namer", t0, "maker-abcde", "")
	older := vmNamed("older", "u-older", t0.Add(-time.Hour), "maker-abcde", "")
	if got := Choose(own, []*v1alpha2.VirtualMachine{namer, maker, older}); got != "maker" {
		t.Errorf("Choose = %s, want the maker", got)
	}
	if got := Choose(own, []*v1alpha2.VirtualMachine{namer, older}); got != "older" {
		t.Errorf("Choose = %s, want the oldest that names it", got)
	}
	recorder := vmNamed("recorder", "u-rec", t0.Add(2*time.Hour), "", "maker-abcde")
	if !Wants(recorder, own) {
		t.Error("a VM that records the vmmac does not want it")
	}
	if got := Choose(own, []*v1alpha2.VirtualMachine{namer, maker, recorder}); got != "recorder" {
		t.Errorf("Choose = %s, want the VM that records it", got)
	}
	own.Status.VirtualMachine = "namer"
	if got := Choose(own, []*v1alpha2.VirtualMachine{namer, maker, recorder}); got != "namer" {
		t.Errorf("Choose = %s, want the recorded user", got)
	}
	now := metav1.Now()
	own.DeletionTimestamp = &now
	if Wants(maker, own) {
		t.Error("the maker wants its own vmmac being deleted")
	}
	if !Wants(namer, own) {
		t.Error("a VM that names a vmmac being deleted no longer wants it (its finalizer must hold)")
	}
}

// TestWanted: the address a vmmac asks for is spec.address in canonical form, else the
// one it holds.
func TestWanted(t *testing.T) {
	m := &v1alpha2.VirtualMachineMACAddress{}
	if a, err := Wanted(m); a != "" || err != nil {
		t.Errorf("auto, unbound: %q, %v", a, err)
	}
	m.Status.Address = "5e:e6:19:22:0f:d8"
	if a, _ := Wanted(m); a != "5e:e6:19:22:0f:d8" {
		t.Errorf("auto, bound: %q", a)
	}
	m.Spec.Address = "02-AB-CD-00-00-01"
	if a, _ := Wanted(m); a != "02:ab:cd:00:00:01" {
		t.Errorf("static: %q", a)
	}
	m.Spec.Address = "03:00:00:00:00:01"
	if _, err := Wanted(m); err == nil {
		t.Error("a multicast spec.address is wanted")
	}
}

func ptrTrue() *bool { b := true; return &b }
