package controller_test

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/macaddress"
	"github.com/ferryvm/ferry/internal/macaddr"
)

func getMAC(t *testing.T, ns, name string) *v1alpha2.VirtualMachineMACAddress {
	t.Helper()
	m := &v1alpha2.VirtualMachineMACAddress{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// macLease reads the lease of addr; nil when there is none.
func macLease(t *testing.T, addr string) *v1alpha2.VirtualMachineMACAddressLease {
	t.Helper()
	l := &v1alpha2.VirtualMachineMACAddressLease{}
	err := k8s.Get(ctx, client.ObjectKey{Name: macaddr.LeaseName(addr)}, l)
	if client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	if err != nil {
		return nil
	}
	return l
}

func staticMAC(ns, name, addr string) *v1alpha2.VirtualMachineMACAddress {
	return &v1alpha2.VirtualMachineMACAddress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: v1alpha2.VirtualMachineMACAddressSpec{Address: addr}}
}

// waitMACPhase waits for the vmmac to be in phase, used by vm ("" for none).
func waitMACPhase(t *testing.T, ns, name string, phase v1alpha2.VirtualMachineMACAddressPhase, vm string) *v1alpha2.VirtualMachineMACAddress {
	t.Helper()
	var m *v1alpha2.VirtualMachineMACAddress
	eventually(t, timeout, fmt.Sprintf("vmmac %s %s by %q", name, phase, vm), func() (bool, string) {
		m = getMAC(t, ns, name)
		return m.Status.Phase == phase && m.Status.VirtualMachine == vm, fmt.Sprintf("%s by %q, %+v", m.Status.Phase, m.Status.VirtualMachine, m.Status.Conditions)
	})
	return m
}

// waitVMMAC waits for the VM's MAC condition to have status and reason, its message want.
func waitVMMAC(t *testing.T, ns, name string, status metav1.ConditionStatus, reason, want string) *v1alpha2.VirtualMachine {
	t.Helper()
	var vm *v1alpha2.VirtualMachine
	eventually(t, timeout, fmt.Sprintf("VM %s %s %s", name, v1alpha2.VMConditionMACAddressReady, status), func() (bool, string) {
		vm = getVM(t, ns, name)
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionMACAddressReady)
		if c == nil {
			return false, "no condition"
		}
		return c.Status == status && c.Reason == reason && strings.Contains(c.Message, want), fmt.Sprintf("%s %s %q", c.Status, c.Reason, c.Message)
	})
	return vm
}

func podArgs(p corev1.Pod) string { return strings.Join(p.Spec.Containers[0].Args, " ") }

// TestMACAutoAllocation: VMs that name no VirtualMachineMACAddress each get one of their
// own (named <vm>-<random>, owned by the VM) with a distinct address in the cluster's
// locally administered prefix, held by a Bound lease named after it; the VM's status and
// its launcher pod carry that MAC, and a restarted VM's new pod carries the same one.
// Deleting a VM deletes its vmmac and frees the lease.
func TestMACAutoAllocation(t *testing.T) {
	ns := newNamespace(t)
	prefix, err := macaddress.ClusterPrefix(ctx, k8s)
	if err != nil {
		t.Fatal(err)
	}
	if prefix[0]&0x03 != 0x02 {
		t.Fatalf("the cluster's prefix %s is not locally administered unicast", prefix)
	}
	names := []string{"a", "b", "c", "d"}
	seen := map[string]string{}
	for _, name := range names {
		makeImageDisk(t, ns, "root-"+name)
		if err := k8s.Create(ctx, newVM(ns, name, "root-"+name, v1alpha2.AlwaysOn)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		vm := waitVMMAC(t, ns, name, metav1.ConditionTrue, v1alpha2.ReasonMACReady, "the VM's NIC has MAC address")
		st := vm.MainNetworkStatus()
		if st == nil || st.MACAddress == "" || !strings.HasPrefix(st.VirtualMachineMACAddressName, name+"-") {
			t.Fatalf("%s: status.networks %+v", name, vm.Status.Networks)
		}
		if !prefix.Contains(st.MACAddress) {
			t.Errorf("%s: MAC %s outside the cluster's prefix %s", name, st.MACAddress, prefix)
		}
		if other, dup := seen[st.MACAddress]; dup {
			t.Errorf("%s and %s both have MAC %s", other, name, st.MACAddress)
		}
		seen[st.MACAddress] = name
		m := waitMACPhase(t, ns, st.VirtualMachineMACAddressName, v1alpha2.VirtualMachineMACAddressPhaseAttached, name)
		if m.Status.Address != st.MACAddress || m.Labels[v1alpha2.LabelVirtualMachineUID] != string(vm.UID) || m.Spec.Address != "" {
			t.Errorf("vmmac %s: address %s (VM has %s), labels %v, spec %+v", m.Name, m.Status.Address, st.MACAddress, m.Labels, m.Spec)
		}
		if o := metav1.GetControllerOf(m); o == nil || o.UID != vm.UID {
			t.Errorf("vmmac %s owned by %+v, want the VM", m.Name, o)
		}
		eventually(t, timeout, "lease of "+st.MACAddress+" Bound", func() (bool, string) {
			l := macLease(t, st.MACAddress)
			if l == nil {
				return false, "no lease"
			}
			ref := l.Spec.VirtualMachineMACAddressRef
			return ref != nil && ref.Name == m.Name && ref.Namespace == ns && l.Status.Phase == v1alpha2.VirtualMachineMACAddressLeasePhaseBound &&
				l.Labels[v1alpha2.LabelVirtualMachineMACAddressUID] == string(m.UID), fmt.Sprintf("%+v %s %v", ref, l.Status.Phase, l.Labels)
		})
		pod := waitPod(t, ns, name)
		if !strings.Contains(podArgs(pod), "--mac "+st.MACAddress) {
			t.Errorf("%s's launcher is not given MAC %s: %s", name, st.MACAddress, podArgs(pod))
		}
	}

	// A restart (the guest shut down, AlwaysOn starts it again in a new pod) keeps the MAC.
	vm := getVM(t, ns, "a")
	mac := vm.MainNetworkStatus().MACAddress
	pod := waitPod(t, ns, "a")
	runPod(t, &pod, "node-a")
	waitPhase(t, ns, "a", v1alpha2.MachineRunning)
	setPodStatus(t, &pod, corev1.PodSucceeded, false)
	eventually(t, timeout, "a new launcher pod for a", func() (bool, string) {
		pods := livePods(t, ns, "a")
		if len(pods) != 1 || pods[0].UID == pod.UID {
			return false, fmt.Sprintf("%d live pods", len(pods))
		}
		return strings.Contains(podArgs(pods[0]), "--mac "+mac), podArgs(pods[0])
	})

	// Deleting the VM deletes its vmmac and frees the lease.
	name := getVM(t, ns, "b").MainNetworkStatus()
	deleteVM(t, ns, "b")
	eventually(t, timeout, "b's vmmac and lease gone", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name.VirtualMachineMACAddressName}, &v1alpha2.VirtualMachineMACAddress{})
		l := macLease(t, name.MACAddress)
		return client.IgnoreNotFound(err) == nil && err != nil && l == nil, fmt.Sprintf("vmmac: %v, lease %v", err, l != nil)
	})
}

// TestMACStaticAndConflict: a VirtualMachineMACAddress with an address (written with
// dashes, in capitals) is Bound to it in canonical form; a VM naming it in spec.networks
// gets it on its launcher. The same address asked for in another namespace is not bound
// and says who holds it (VirtualMachineMACAddressLeaseAlreadyExists); a VM naming that one
// does not start and says why. Once the first VM and its vmmac are deleted, the lease is
// freed, the other namespace's vmmac takes the address and its VM starts with it.
func TestMACStaticAndConflict(t *testing.T) {
	ns, other := newNamespace(t), newNamespace(t)
	const asked, addr = "02-AB-CD-00-10-01", "02:ab:cd:00:10:01"
	if err := k8s.Create(ctx, staticMAC(ns, "fixed", asked)); err != nil {
		t.Fatal(err)
	}
	m := waitMACPhase(t, ns, "fixed", v1alpha2.VirtualMachineMACAddressPhaseBound, "")
	if m.Status.Address != addr {
		t.Fatalf("bound to %q, want %s", m.Status.Address, addr)
	}
	if !strings.Contains(strings.Join(m.Finalizers, ","), v1alpha2.FinalizerMACAddress) {
		t.Errorf("finalizers %v", m.Finalizers)
	}
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "holder", "root", v1alpha2.AlwaysOn)
	vm.Spec.Networks = []v1alpha2.NetworksSpec{{Type: v1alpha2.NetworkTypeMain, VirtualMachineMACAddressName: "fixed"}}
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "holder")
	if !strings.Contains(podArgs(pod), "--mac "+addr) {
		t.Errorf("the launcher is not given %s: %s", addr, podArgs(pod))
	}
	waitMACPhase(t, ns, "fixed", v1alpha2.VirtualMachineMACAddressPhaseAttached, "holder")
	if st := getVM(t, ns, "holder").MainNetworkStatus(); st == nil || st.MACAddress != addr || st.VirtualMachineMACAddressName != "fixed" {
		t.Errorf("status.networks %+v", st)
	}
	var own v1alpha2.VirtualMachineMACAddressList
	if err := k8s.List(ctx, &own, client.InNamespace(ns)); err != nil || len(own.Items) != 1 {
		t.Errorf("the VM that names a vmmac made one of its own too: %d vmmacs, %v", len(own.Items), err)
	}

	if err := k8s.Create(ctx, staticMAC(other, "thief", addr)); err != nil {
		t.Fatal(err)
	}
	want := "The MAC address " + addr + " is already held by VM " + ns + "/holder (VirtualMachineMACAddress " + ns + "/fixed)"
	eventually(t, timeout, "thief refused", func() (bool, string) {
		m := getMAC(t, other, "thief")
		c := meta.FindStatusCondition(m.Status.Conditions, v1alpha2.MACAddressConditionBound)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha2.ReasonMACAddressLeaseAlreadyExists && strings.Contains(c.Message, want) &&
			m.Status.Phase == v1alpha2.VirtualMachineMACAddressPhasePending, fmt.Sprintf("%s %+v", m.Status.Phase, c)
	})
	makeImageDisk(t, other, "root")
	waiting := newVM(other, "waiting", "root", v1alpha2.AlwaysOn)
	waiting.Spec.Networks = []v1alpha2.NetworksSpec{{Type: v1alpha2.NetworkTypeMain, VirtualMachineMACAddressName: "thief"}}
	if err := k8s.Create(ctx, waiting); err != nil {
		t.Fatal(err)
	}
	waitVMMAC(t, other, "waiting", metav1.ConditionFalse, v1alpha2.ReasonMACNotAvailable, want)
	eventually(t, timeout, "waiting Pending, saying why", func() (bool, string) {
		got := getVM(t, other, "waiting")
		c := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.VMConditionRunning)
		return got.Status.Phase == v1alpha2.MachinePending && c != nil && c.Reason == v1alpha2.ReasonMACNotAvailable && strings.Contains(c.Message, want),
			fmt.Sprintf("%s %+v", got.Status.Phase, c)
	})
	if pods := livePods(t, other, "waiting"); len(pods) != 0 {
		t.Errorf("waiting started without its MAC: %d pods", len(pods))
	}

	// A vmmac a VM uses stays (its finalizer) until the VM is gone; then its lease goes
	// with it, and the address is free for the other namespace.
	if err := k8s.Delete(ctx, getMAC(t, ns, "fixed")); err != nil {
		t.Fatal(err)
	}
	holdsFor(t, timeout/15, "the used vmmac kept", func() (bool, string) {
		m := getMAC(t, ns, "fixed")
		return m.Status.VirtualMachine == "holder" && macLease(t, addr) != nil, fmt.Sprintf("user %q", m.Status.VirtualMachine)
	})
	deleteVM(t, ns, "holder")
	eventually(t, timeout, "the lease taken by "+other+"/thief", func() (bool, string) {
		l := macLease(t, addr)
		if l == nil {
			return false, "no lease"
		}
		ref := l.Spec.VirtualMachineMACAddressRef
		return ref != nil && ref.Namespace == other && ref.Name == "thief", fmt.Sprintf("%+v", ref)
	})
	waitMACPhase(t, other, "thief", v1alpha2.VirtualMachineMACAddressPhaseAttached, "waiting")
	waitVMMAC(t, other, "waiting", metav1.ConditionTrue, v1alpha2.ReasonMACReady, addr)
	if pod := waitPod(t, other, "waiting"); !strings.Contains(podArgs(pod), "--mac "+addr) {
		t.Errorf("waiting's launcher is not given %s: %s", addr, podArgs(pod))
	}
}

// TestMACBadInput: the apiserver refuses a MAC address that is no NIC's (multicast,
// broadcast, all zeros, malformed, mixed separators), a change of a vmmac's address, and
// a VM with a network Ferry does not have, each with a message that says what to fix.
func TestMACBadInput(t *testing.T) {
	ns := newNamespace(t)
	for _, c := range []struct{ addr, want string }{
		{"01:00:5e:00:00:01", "must be a unicast MAC address"},
		{"ff:ff:ff:ff:ff:ff", "must be a unicast MAC address"},
		{"00:00:00:00:00:00", "00:00:00:00:00:00 is not a usable MAC address"},
		{"02:00:00:00:01", "spec.address"},
		{"02:00:00:00:00:0g", "spec.address"},
		{"02:00-00:00:00:01", "all with colons or all with dashes"},
	} {
		err := k8s.Create(ctx, staticMAC(ns, "bad", c.addr))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("address %q: %v, want an error with %q", c.addr, err, c.want)
		}
		if err == nil {
			_ = k8s.Delete(ctx, staticMAC(ns, "bad", ""))
		}
	}
	if err := k8s.Create(ctx, staticMAC(ns, "good", "02:00:00:00:20:01")); err != nil {
		t.Fatal(err)
	}
	waitMACPhase(t, ns, "good", v1alpha2.VirtualMachineMACAddressPhaseBound, "")
	for _, addr := range []string{"02:00:00:00:20:02", ""} {
		m := getMAC(t, ns, "good")
		m.Spec.Address = addr
		if err := k8s.Update(ctx, m); err == nil || !strings.Contains(err.Error(), "spec.address cannot be set, changed or removed") {
			t.Errorf("changing the address to %q: %v", addr, err)
		}
	}
	auto := &v1alpha2.VirtualMachineMACAddress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auto"}}
	if err := k8s.Create(ctx, auto); err != nil {
		t.Fatal(err)
	}
	auto = waitMACPhase(t, ns, "auto", v1alpha2.VirtualMachineMACAddressPhaseBound, "")
	auto.Spec.Address = auto.Status.Address
	if err := k8s.Update(ctx, auto); err == nil || !strings.Contains(err.Error(), "spec.address cannot be set") {
		t.Errorf("setting an address on an allocated vmmac: %v", err)
	}

	for _, c := range []struct {
		nets []v1alpha2.NetworksSpec
		want string
	}{
		{[]v1alpha2.NetworksSpec{{Type: v1alpha2.NetworkTypeNetwork, Name: "user-net"}}, "Ferry has the main network only"},
		{[]v1alpha2.NetworksSpec{{Type: v1alpha2.NetworkTypeMain}, {Type: v1alpha2.NetworkTypeClusterNetwork, Name: "corp-net"}}, "spec.networks"},
		{[]v1alpha2.NetworksSpec{{Type: "Bridge"}}, "spec.networks[0].type"},
	} {
		vm := newVM(ns, "vm-bad-net", "root", v1alpha2.AlwaysOff)
		vm.Spec.Networks = c.nets
		err := k8s.Create(ctx, vm)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("networks %+v: %v, want an error with %q", c.nets, err, c.want)
		}
		if err == nil {
			deleteVM(t, ns, vm.Name)
		}
	}
}

// TestMACKeptByMigration: a live migration's target launcher is given the MAC its source
// has (the VM's vmmac's), and after the migration the VM still has that MAC and vmmac.
func TestMACKeptByMigration(t *testing.T) {
	op, source, target, node := evictToTarget(t)
	vm := getVM(t, source.Namespace, "m")
	st := vm.MainNetworkStatus()
	if st == nil || st.MACAddress == "" {
		t.Fatalf("the VM has no MAC: %+v", vm.Status.Networks)
	}
	for _, p := range []*corev1.Pod{source, target} {
		if !strings.Contains(podArgs(*p), "--mac "+st.MACAddress) {
			t.Errorf("pod %s is not given MAC %s: %s", p.Name, st.MACAddress, podArgs(*p))
		}
	}
	finishMigration(t, op, source, target, node, false)
	after := getVM(t, source.Namespace, "m").MainNetworkStatus()
	if after == nil || after.MACAddress != st.MACAddress || after.VirtualMachineMACAddressName != st.VirtualMachineMACAddressName {
		t.Errorf("after the migration the VM has %+v, before %+v", after, st)
	}
	waitMACPhase(t, source.Namespace, st.VirtualMachineMACAddressName, v1alpha2.VirtualMachineMACAddressPhaseAttached, "m")
}
