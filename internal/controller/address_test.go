package controller_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// TestAddressesAreNeverShared: VMs created at once get distinct addresses; a VM asking for
// a taken or foreign address is told so and gets none.
func TestAddressesAreNeverShared(t *testing.T) {
	ns := newNamespace(t)
	const n = 8
	for i := range n {
		disk := fmt.Sprintf("d%d", i)
		makeImageDisk(t, ns, disk)
		if err := k8s.Create(ctx, newVM(ns, fmt.Sprintf("vm%d", i), disk, v1alpha2.AlwaysOff)); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("vm%d", i)
		var addr string
		eventually(t, timeout, name+" has an address", func() (bool, string) {
			addr = getVM(t, ns, name).Status.IPAddress
			return addr != "", ""
		})
		if other, dup := seen[addr]; dup {
			t.Fatalf("%s and %s share %s", name, other, addr)
		}
		seen[addr] = name
	}

	taken := getVM(t, ns, "vm0").Status.IPAddress
	makeImageDisk(t, ns, "dx")
	makeImageDisk(t, ns, "dy")
	dup := newVM(ns, "dup", "dx", v1alpha2.AlwaysOff)
	dup.Spec.VirtualMachineIPAddress = taken
	foreign := newVM(ns, "foreign", "dy", v1alpha2.AlwaysOff)
	foreign.Spec.VirtualMachineIPAddress = "192.168.7.7"
	for _, vm := range []*v1alpha2.VirtualMachine{dup, foreign} {
		if err := k8s.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"dup": "already held by VM " + ns + "/vm0", "foreign": "outside the VM address range"} {
		eventually(t, timeout, name+" refused its address", func() (bool, string) {
			vm := getVM(t, ns, name)
			c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionIPAddressReady)
			if c == nil {
				return false, "no condition"
			}
			return c.Status == "False" && c.Reason == v1alpha2.ReasonIPUnavailable && strings.Contains(c.Message, want) && vm.Status.IPAddress == "", c.Reason + ": " + c.Message
		})
	}
}

// setSpec changes a VM's spec with a merge patch (the controller writes the VM too).
func setSpec(t *testing.T, ns, name string, change func(*v1alpha2.VirtualMachine)) {
	t.Helper()
	vm := getVM(t, ns, name)
	orig := vm.DeepCopy()
	change(vm)
	if err := k8s.Patch(ctx, vm, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
}

func getIP(t *testing.T, ns, name string) *v1alpha2.VirtualMachineIPAddress {
	t.Helper()
	ip := &v1alpha2.VirtualMachineIPAddress{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ip); err != nil {
		t.Fatal(err)
	}
	return ip
}

func getLease(t *testing.T, addr string) *v1alpha2.VirtualMachineIPAddressLease {
	t.Helper()
	l := &v1alpha2.VirtualMachineIPAddressLease{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: ipam.LeaseName(addr)}, l); err != nil {
		t.Fatal(err)
	}
	return l
}

func staticIP(ns, name, addr string) *v1alpha2.VirtualMachineIPAddress {
	return &v1alpha2.VirtualMachineIPAddress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha2.VirtualMachineIPAddressSpec{Type: v1alpha2.VirtualMachineIPAddressTypeStatic, StaticIP: addr}}
}

// waitIPPhase waits for a vmip's phase (and, when given, its user) and returns it.
func waitIPPhase(t *testing.T, ns, name string, phase v1alpha2.VirtualMachineIPAddressPhase, vm string) *v1alpha2.VirtualMachineIPAddress {
	t.Helper()
	var ip *v1alpha2.VirtualMachineIPAddress
	eventually(t, timeout, fmt.Sprintf("vmip %s %s (VM %q)", name, phase, vm), func() (bool, string) {
		ip = getIP(t, ns, name)
		return ip.Status.Phase == phase && ip.Status.VirtualMachine == vm, fmt.Sprintf("%s, VM %q, address %q, conditions %+v", ip.Status.Phase, ip.Status.VirtualMachine, ip.Status.Address, ip.Status.Conditions)
	})
	return ip
}

// waitBoundReason waits until a vmip is not bound for reason, with a message saying want.
func waitBoundReason(t *testing.T, ns, name, reason, want string) {
	t.Helper()
	eventually(t, timeout, "vmip "+name+" not bound: "+reason, func() (bool, string) {
		ip := getIP(t, ns, name)
		c := meta.FindStatusCondition(ip.Status.Conditions, v1alpha2.IPAddressConditionBound)
		if c == nil {
			return false, "no Bound condition"
		}
		return c.Status == metav1.ConditionFalse && c.Reason == reason && strings.Contains(c.Message, want) && ip.Status.Phase == v1alpha2.VirtualMachineIPAddressPhasePending,
			fmt.Sprintf("%s %s: %s (phase %s)", c.Status, c.Reason, c.Message, ip.Status.Phase)
	})
}

// waitVMAddress waits for the VM's VirtualMachineIPAddressReady condition.
func waitVMAddress(t *testing.T, ns, name string, status metav1.ConditionStatus, reason, want string) *v1alpha2.VirtualMachine {
	t.Helper()
	var vm *v1alpha2.VirtualMachine
	eventually(t, timeout, fmt.Sprintf("VM %s %s %s", name, v1alpha2.VMConditionIPAddressReady, status), func() (bool, string) {
		vm = getVM(t, ns, name)
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionIPAddressReady)
		if c == nil {
			return false, "no condition"
		}
		return c.Status == status && c.Reason == reason && strings.Contains(c.Message, want), fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
	})
	return vm
}

// TestAutoAddress: a VM that names no VirtualMachineIPAddress gets one of type Auto named
// after it and owned by it, Attached to it; its lease, named after the address, is Bound
// to it. The VM says so in VirtualMachineIPAddressReady, and no legacy condition is left.
func TestAutoAddress(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newVM(ns, "web", "root", v1alpha2.AlwaysOff)); err != nil {
		t.Fatal(err)
	}
	vm := waitVMAddress(t, ns, "web", metav1.ConditionTrue, v1alpha2.ReasonIPLeased, "holds address")
	if meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionIPAddressReadyLegacy) != nil {
		t.Errorf("the legacy condition %s is set", v1alpha2.VMConditionIPAddressReadyLegacy)
	}
	name := vm.Status.VirtualMachineIPAddressName
	if !strings.HasPrefix(name, "web-") || len(name) != len("web-")+5 {
		t.Errorf("the VM's vmip is %q, want web-<5 random characters> as Deckhouse names it", name)
	}
	ip := waitIPPhase(t, ns, name, v1alpha2.VirtualMachineIPAddressPhaseAttached, "web")
	if ip.Spec.Type != v1alpha2.VirtualMachineIPAddressTypeAuto || ip.Status.Address != vm.Status.IPAddress || ip.Labels[v1alpha2.LabelVirtualMachineUID] != string(vm.UID) {
		t.Errorf("vmip %s: spec %+v, address %s (VM has %s), labels %v", name, ip.Spec, ip.Status.Address, vm.Status.IPAddress, ip.Labels)
	}
	if o := metav1.GetControllerOf(ip); o == nil || o.UID != vm.UID || o.Kind != "VirtualMachine" {
		t.Errorf("vmip %s owned by %+v, want the VM", name, o)
	}
	if !slices.Contains(ip.Finalizers, v1alpha2.FinalizerIPAddress) {
		t.Errorf("vmip finalizers %v", ip.Finalizers)
	}
	eventually(t, timeout, "lease Bound", func() (bool, string) {
		l := getLease(t, ip.Status.Address)
		ref := l.Spec.VirtualMachineIPAddressRef
		return ref != nil && ref.Name == name && ref.Namespace == ns && l.Status.Phase == v1alpha2.VirtualMachineIPAddressLeasePhaseBound &&
			l.Labels[v1alpha2.LabelVirtualMachineIPAddressUID] == string(ip.UID), fmt.Sprintf("%+v %s %v", ref, l.Status.Phase, l.Labels)
	})
}

// TestStaticAddressFlow is the user guide's: a VirtualMachineIPAddress of type Static
// with an address is Bound to it; a VM naming it gets that address (the launcher is told
// it: the guest's DHCP hands it out); deleted, the VM leaves it Bound, and a new VM gets
// the same address. Deleted too, the address is Released and kept for the namespace: a
// new Static one of that namespace takes it back, another namespace's is refused.
func TestStaticAddressFlow(t *testing.T) {
	ns := newNamespace(t)
	const addr = "10.66.10.77"
	if err := k8s.Create(ctx, staticIP(ns, "linux-vm-custom-ip", addr)); err != nil {
		t.Fatal(err)
	}
	ip := waitIPPhase(t, ns, "linux-vm-custom-ip", v1alpha2.VirtualMachineIPAddressPhaseBound, "")
	if ip.Status.Address != addr {
		t.Fatalf("bound to %q, want %s", ip.Status.Address, addr)
	}

	for i, name := range []string{"first", "second"} {
		disk := fmt.Sprintf("root%d", i)
		makeImageDisk(t, ns, disk)
		vm := newVM(ns, name, disk, v1alpha2.AlwaysOn)
		vm.Spec.VirtualMachineIPAddressName = "linux-vm-custom-ip"
		if err := k8s.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
		pod := waitPod(t, ns, name)
		if args := strings.Join(pod.Spec.Containers[0].Args, " "); !strings.Contains(args, "--ip "+addr+"/24") {
			t.Errorf("%s's launcher is not given %s: %s", name, addr, args)
		}
		runPod(t, &pod, "node-a")
		got := waitPhase(t, ns, name, v1alpha2.MachineRunning)
		if got.Status.IPAddress != addr || got.Status.VirtualMachineIPAddressName != "linux-vm-custom-ip" {
			t.Errorf("%s runs with %q of %q", name, got.Status.IPAddress, got.Status.VirtualMachineIPAddressName)
		}
		waitIPPhase(t, ns, "linux-vm-custom-ip", v1alpha2.VirtualMachineIPAddressPhaseAttached, name)
		deleteVM(t, ns, name)
		ip = waitIPPhase(t, ns, "linux-vm-custom-ip", v1alpha2.VirtualMachineIPAddressPhaseBound, "")
		if ip.Status.Address != addr || !ip.DeletionTimestamp.IsZero() {
			t.Fatalf("after deleting %s: vmip address %q, deleted at %v", name, ip.Status.Address, ip.DeletionTimestamp)
		}
	}

	if err := k8s.Delete(ctx, getIP(t, ns, "linux-vm-custom-ip")); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "lease Released, kept for "+ns, func() (bool, string) {
		l := getLease(t, addr)
		ref := l.Spec.VirtualMachineIPAddressRef
		return l.Status.Phase == v1alpha2.VirtualMachineIPAddressLeasePhaseReleased && ref != nil && ref.Name == "" && ref.Namespace == ns,
			fmt.Sprintf("%s %+v", l.Status.Phase, ref)
	})
	other := newNamespace(t)
	if err := k8s.Create(ctx, staticIP(other, "thief", addr)); err != nil {
		t.Fatal(err)
	}
	waitBoundReason(t, other, "thief", v1alpha2.ReasonIPAddressLeaseAlreadyExists, "released lately by namespace "+ns)
	if err := k8s.Create(ctx, staticIP(ns, "again", addr)); err != nil {
		t.Fatal(err)
	}
	waitIPPhase(t, ns, "again", v1alpha2.VirtualMachineIPAddressPhaseBound, "")
	if l := getLease(t, addr); l.Spec.VirtualMachineIPAddressRef.Name != "again" {
		t.Errorf("the lease names %+v, want again", l.Spec.VirtualMachineIPAddressRef)
	}
	waitBoundReason(t, other, "thief", v1alpha2.ReasonIPAddressLeaseAlreadyExists, "already held by VirtualMachineIPAddress "+ns+"/again")
}

// TestStaticAddressOfAnotherRange is the user guide's static address, 10.66.20.77, of the
// second of the VM address ranges (the envtest controller has ferry up's three): the vmip
// is Bound to it, the VM that names it gets it with its own range's prefix length and
// gateway (10.66.20.1, not the first range's), and the vmip is Attached to the VM. The
// second range's gateway itself is refused, saying which range's it is.
func TestStaticAddressOfAnotherRange(t *testing.T) {
	ns := newNamespace(t)
	const addr = "10.66.20.77"
	if err := k8s.Create(ctx, staticIP(ns, "linux-vm-custom-ip", addr)); err != nil {
		t.Fatal(err)
	}
	if ip := waitIPPhase(t, ns, "linux-vm-custom-ip", v1alpha2.VirtualMachineIPAddressPhaseBound, ""); ip.Status.Address != addr {
		t.Fatalf("bound to %q, want %s", ip.Status.Address, addr)
	}
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "linux-vm", "root", v1alpha2.AlwaysOn)
	vm.Spec.VirtualMachineIPAddressName = "linux-vm-custom-ip"
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "linux-vm")
	if args := strings.Join(pod.Spec.Containers[0].Args, " "); !strings.Contains(args, "--ip "+addr+"/24 --gateway 10.66.20.1") {
		t.Errorf("the launcher is not given %s/24 with gateway 10.66.20.1: %s", addr, args)
	}
	runPod(t, &pod, "node-a")
	if got := waitPhase(t, ns, "linux-vm", v1alpha2.MachineRunning); got.Status.IPAddress != addr {
		t.Errorf("the VM runs with %q, want %s", got.Status.IPAddress, addr)
	}
	waitIPPhase(t, ns, "linux-vm-custom-ip", v1alpha2.VirtualMachineIPAddressPhaseAttached, "linux-vm")
	if l := getLease(t, addr); l.Status.Phase != v1alpha2.VirtualMachineIPAddressLeasePhaseBound {
		t.Errorf("lease of %s is %s, want Bound", addr, l.Status.Phase)
	}

	if err := k8s.Create(ctx, staticIP(ns, "gw", "10.66.20.1")); err != nil {
		t.Fatal(err)
	}
	waitBoundReason(t, ns, "gw", v1alpha2.ReasonIPAddressOutOfRange, "10.66.20.1 is the gateway address of the VM address range 10.66.20.0/24")
}

// TestAddressOutsideTheRangesAfterAChange: a lease made under another --ip-range (here
// 10.77.0.5, of no configured range) still binds the vmip it names, but a VM using it does
// not start, as no range gives it a gateway, and says why.
func TestAddressOutsideTheRangesAfterAChange(t *testing.T) {
	ns := newNamespace(t)
	const addr = "10.77.0.5"
	l := &v1alpha2.VirtualMachineIPAddressLease{ObjectMeta: metav1.ObjectMeta{Name: ipam.LeaseName(addr)},
		Spec: v1alpha2.VirtualMachineIPAddressLeaseSpec{VirtualMachineIPAddressRef: &v1alpha2.VirtualMachineIPAddressLeaseIPAddressRef{Namespace: ns, Name: "old-ip"}}}
	if err := k8s.Create(ctx, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, l) })
	if err := k8s.Create(ctx, staticIP(ns, "old-ip", addr)); err != nil {
		t.Fatal(err)
	}
	waitIPPhase(t, ns, "old-ip", v1alpha2.VirtualMachineIPAddressPhaseBound, "")
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "vm", "root", v1alpha2.AlwaysOn)
	vm.Spec.VirtualMachineIPAddressName = "old-ip"
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	got := waitVMAddress(t, ns, "vm", metav1.ConditionFalse, v1alpha2.ReasonIPUnavailable,
		"holds 10.77.0.5, which is in none of the VM address ranges 10.66.10.0/24,10.66.20.0/24,10.66.30.0/24")
	if got.Status.Phase != v1alpha2.MachinePending || got.Status.IPAddress != "" {
		t.Errorf("phase %s, address %q", got.Status.Phase, got.Status.IPAddress)
	}
	if pods := livePods(t, ns, "vm"); len(pods) != 0 {
		t.Errorf("the VM started with an address of no range: %d pods", len(pods))
	}
}

// TestStaticAddressRefused: a Static address outside the range, or held by another, is
// not bound and says why; a VM that names it does not start and says why too.
func TestStaticAddressRefused(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	holder := newVM(ns, "holder", "root", v1alpha2.AlwaysOff)
	if err := k8s.Create(ctx, holder); err != nil {
		t.Fatal(err)
	}
	held := waitVMAddress(t, ns, "holder", metav1.ConditionTrue, v1alpha2.ReasonIPLeased, "").Status.IPAddress

	for _, c := range []struct{ name, addr, reason, want string }{
		{"foreign", "192.168.7.7", v1alpha2.ReasonIPAddressOutOfRange, "outside the VM address ranges 10.66.10.0/24, 10.66.20.0/24 and 10.66.30.0/24"},
		{"gateway", "10.66.10.1", v1alpha2.ReasonIPAddressOutOfRange, "gateway"},
		{"taken", held, v1alpha2.ReasonIPAddressLeaseAlreadyExists, "already held by VM " + ns + "/holder"},
	} {
		if err := k8s.Create(ctx, staticIP(ns, c.name, c.addr)); err != nil {
			t.Fatal(err)
		}
		waitBoundReason(t, ns, c.name, c.reason, c.want)
		disk := "d-" + c.name
		makeImageDisk(t, ns, disk)
		vm := newVM(ns, "vm-"+c.name, disk, v1alpha2.AlwaysOn)
		vm.Spec.VirtualMachineIPAddressName = c.name
		if err := k8s.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
		got := waitVMAddress(t, ns, vm.Name, metav1.ConditionFalse, v1alpha2.ReasonIPUnavailable, c.want)
		if got.Status.Phase != v1alpha2.MachinePending || got.Status.IPAddress != "" {
			t.Errorf("%s: phase %s, address %q", vm.Name, got.Status.Phase, got.Status.IPAddress)
		}
		if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.VMConditionRunning); c == nil || !strings.Contains(c.Message, "VirtualMachineIPAddress") {
			t.Errorf("%s: Running condition %+v does not say why", vm.Name, c)
		}
		if pods := livePods(t, ns, vm.Name); len(pods) != 0 {
			t.Errorf("%s started without its address: %d pods", vm.Name, len(pods))
		}
	}
	// A VM that names a vmip not made yet waits for it.
	makeImageDisk(t, ns, "d-later")
	later := newVM(ns, "later", "d-later", v1alpha2.AlwaysOff)
	later.Spec.VirtualMachineIPAddressName = "later-ip"
	if err := k8s.Create(ctx, later); err != nil {
		t.Fatal(err)
	}
	waitVMAddress(t, ns, "later", metav1.ConditionFalse, v1alpha2.ReasonIPNotReady, `The requested VirtualMachineIPAddress "later-ip" was not found`)
	if err := k8s.Create(ctx, staticIP(ns, "later-ip", "10.66.10.78")); err != nil {
		t.Fatal(err)
	}
	if got := waitVMAddress(t, ns, "later", metav1.ConditionTrue, v1alpha2.ReasonIPLeased, ""); got.Status.IPAddress != "10.66.10.78" {
		t.Errorf("later has %q", got.Status.IPAddress)
	}
}

// TestAddressHeldByAnotherVM: of two VMs naming one VirtualMachineIPAddress, the first
// has it; the second does not start and says which VM holds it, and gets it when the
// first is deleted.
func TestAddressHeldByAnotherVM(t *testing.T) {
	ns := newNamespace(t)
	if err := k8s.Create(ctx, staticIP(ns, "shared", "10.66.10.90")); err != nil {
		t.Fatal(err)
	}
	waitIPPhase(t, ns, "shared", v1alpha2.VirtualMachineIPAddressPhaseBound, "")
	for _, name := range []string{"a", "b"} {
		makeImageDisk(t, ns, "root-"+name)
		vm := newVM(ns, name, "root-"+name, v1alpha2.AlwaysOn)
		vm.Spec.VirtualMachineIPAddressName = "shared"
		if err := k8s.Create(ctx, vm); err != nil {
			t.Fatal(err)
		}
		if name == "a" {
			pod := waitPod(t, ns, "a")
			runPod(t, &pod, "node-a")
			waitPhase(t, ns, "a", v1alpha2.MachineRunning)
		}
	}
	b := waitVMAddress(t, ns, "b", metav1.ConditionFalse, v1alpha2.ReasonIPNotReady, `is attached to VirtualMachine "a"`)
	if b.Status.Phase != v1alpha2.MachinePending {
		t.Errorf("b is %s", b.Status.Phase)
	}
	holdsFor(t, 2*time.Second, "b does not start", func() (bool, string) {
		n := len(livePods(t, ns, "b"))
		return n == 0, fmt.Sprintf("%d pods", n)
	})
	waitEvent(t, ns, "VirtualMachine", "b", v1alpha2.ReasonIPNotReady)
	deleteVM(t, ns, "a")
	pod := waitPod(t, ns, "b")
	runPod(t, &pod, "node-a")
	if got := waitPhase(t, ns, "b", v1alpha2.MachineRunning); got.Status.IPAddress != "10.66.10.90" {
		t.Errorf("b runs with %q", got.Status.IPAddress)
	}
	waitIPPhase(t, ns, "shared", v1alpha2.VirtualMachineIPAddressPhaseAttached, "b")
}

// TestLegacyAddressField: Ferry's older spec.virtualMachineIPAddress makes a Static
// VirtualMachineIPAddress owned by the VM; stopped, the VM may ask for another address,
// and its old one goes.
func TestLegacyAddressField(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "old", "root", v1alpha2.AlwaysOff)
	vm.Spec.VirtualMachineIPAddress = "10.66.10.120"
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	got := waitVMAddress(t, ns, "old", metav1.ConditionTrue, v1alpha2.ReasonIPLeased, "10.66.10.120")
	first := got.Status.VirtualMachineIPAddressName
	ip := getIP(t, ns, first)
	if ip.Spec.Type != v1alpha2.VirtualMachineIPAddressTypeStatic || ip.Spec.StaticIP != "10.66.10.120" || metav1.GetControllerOf(ip) == nil {
		t.Errorf("vmip %s: %+v, owner %v", first, ip.Spec, metav1.GetControllerOf(ip))
	}
	setSpec(t, ns, "old", func(vm *v1alpha2.VirtualMachine) { vm.Spec.VirtualMachineIPAddress = "10.66.10.121" })
	got = waitVMAddress(t, ns, "old", metav1.ConditionTrue, v1alpha2.ReasonIPLeased, "10.66.10.121")
	if got.Status.IPAddress != "10.66.10.121" || got.Status.VirtualMachineIPAddressName == first {
		t.Errorf("after the change: %q of %q", got.Status.IPAddress, got.Status.VirtualMachineIPAddressName)
	}
	eventually(t, timeout, "the old vmip gone", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: first}, &v1alpha2.VirtualMachineIPAddress{})
		return client.IgnoreNotFound(err) == nil && err != nil, fmt.Sprint(err)
	})
}

// TestUpgradeKeepsLegacyLease: a lease of Ferry's release before VirtualMachineIPAddress
// (its VM named only by the label with the VM's UID: this release's schema prunes its
// old spec) is taken over by the VirtualMachineIPAddress Ferry makes for that VM, so the
// VM keeps its address.
func TestUpgradeKeepsLegacyLease(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "kept", "root", v1alpha2.AlwaysOff)
	vm.Spec.VirtualMachineIPAddressName = "not-yet" // holds the VM back while the lease is made
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	const addr = "10.66.10.200"
	legacy := &v1alpha2.VirtualMachineIPAddressLease{ObjectMeta: metav1.ObjectMeta{Name: ipam.LeaseName(addr),
		Labels: map[string]string{v1alpha2.LabelLegacyLeaseHolder: string(vm.UID)}}}
	if err := k8s.Create(ctx, legacy); err != nil {
		t.Fatal(err)
	}
	// Another namespace cannot take it.
	other := newNamespace(t)
	if err := k8s.Create(ctx, staticIP(other, "thief", addr)); err != nil {
		t.Fatal(err)
	}
	waitBoundReason(t, other, "thief", v1alpha2.ReasonIPAddressLeaseAlreadyExists, "an earlier Ferry release")

	setSpec(t, ns, "kept", func(vm *v1alpha2.VirtualMachine) { vm.Spec.VirtualMachineIPAddressName = "" })
	got := waitVMAddress(t, ns, "kept", metav1.ConditionTrue, v1alpha2.ReasonIPLeased, "")
	if got.Status.IPAddress != addr {
		t.Errorf("the VM got %q, want its legacy lease's %s", got.Status.IPAddress, addr)
	}
	l := getLease(t, addr)
	if ref := l.Spec.VirtualMachineIPAddressRef; ref == nil || ref.Name != got.Status.VirtualMachineIPAddressName || l.Labels[v1alpha2.LabelLegacyLeaseHolder] != "" {
		t.Errorf("lease %s: ref %+v, labels %v", l.Name, l.Spec.VirtualMachineIPAddressRef, l.Labels)
	}
}

// TestAddressNotAssigned: while the guest agent reports the guest's interfaces without the
// VM's address, VirtualMachineIPAddressReady is False (NotAssigned, saying what the guest
// has); once the guest has it, True again. The VM keeps its address throughout.
func TestAddressNotAssigned(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newVM(ns, "vm", "root", v1alpha2.AlwaysOn)); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "vm")
	runPod(t, &pod, "node-a")
	addr := waitPhase(t, ns, "vm", v1alpha2.MachineRunning).Status.IPAddress
	report := func(a string) *v1alpha2.GuestAgentReport {
		return &v1alpha2.GuestAgentReport{Interfaces: []v1alpha2.GuestInterface{{Name: "lo", IPAddresses: []string{"127.0.0.1"}}, {Name: "ens4", IPAddresses: []string{a}}}}
	}
	setGuest(t, &pod, corev1.ConditionTrue, v1alpha2.ReasonGuestRunning, "QEMU runs the guest's vCPUs", report("192.168.1.9"))
	got := waitVMAddress(t, ns, "vm", metav1.ConditionFalse, v1alpha2.ReasonIPNotAssigned, "("+addr+") is not among the addresses the guest agent reports on the guest's interfaces (lo 127.0.0.1, ens4 192.168.1.9)")
	if got.Status.IPAddress != addr || got.Status.Phase != v1alpha2.MachineRunning {
		t.Errorf("the VM now has %q, phase %s", got.Status.IPAddress, got.Status.Phase)
	}
	setGuest(t, &pod, corev1.ConditionTrue, v1alpha2.ReasonGuestRunning, "QEMU runs the guest's vCPUs", report(addr))
	waitVMAddress(t, ns, "vm", metav1.ConditionTrue, v1alpha2.ReasonIPLeased, addr)
}

// TestAddressOfRunningVMKept: the VirtualMachineIPAddress of a running VM, deleted, stays
// (Terminating, Attached) while the VM runs with its address; it goes with the VM.
func TestAddressOfRunningVMKept(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newVM(ns, "vm", "root", v1alpha2.AlwaysOn)); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "vm")
	runPod(t, &pod, "node-a")
	vm := waitPhase(t, ns, "vm", v1alpha2.MachineRunning)
	name, addr := vm.Status.VirtualMachineIPAddressName, vm.Status.IPAddress
	if err := k8s.Delete(ctx, getIP(t, ns, name)); err != nil {
		t.Fatal(err)
	}
	holdsFor(t, 2*time.Second, "the running VM keeps its vmip and address", func() (bool, string) {
		ip, vm := getIP(t, ns, name), getVM(t, ns, "vm")
		return ip.Status.VirtualMachine == "vm" && vm.Status.IPAddress == addr && vm.Status.VirtualMachineIPAddressName == name,
			fmt.Sprintf("vmip user %q; VM %s of %s", ip.Status.VirtualMachine, vm.Status.IPAddress, vm.Status.VirtualMachineIPAddressName)
	})
	deleteVM(t, ns, "vm")
	eventually(t, timeout, "the vmip gone with the VM", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1alpha2.VirtualMachineIPAddress{})
		return client.IgnoreNotFound(err) == nil && err != nil, fmt.Sprint(err)
	})
}
