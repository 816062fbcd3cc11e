package controller_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/storage"
	"github.com/ferryvm/ferry/internal/controller/vmsnapshot"
)

func newVMSnapshot(ns, name, vm string, required bool, keep v1alpha2.KeepIPAddress) *v1alpha2.VirtualMachineSnapshot {
	return &v1alpha2.VirtualMachineSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha2.VirtualMachineSnapshotSpec{VirtualMachineName: vm, RequiredConsistency: required, KeepIPAddress: keep}}
}

// waitVMSnapshot waits for the VM snapshot's phase and, if reason is given, the reason of
// its VirtualMachineSnapshotReady condition and words of its message.
func waitVMSnapshot(t *testing.T, ns, name string, phase v1alpha2.VirtualMachineSnapshotPhase, reason string, words ...string) *v1alpha2.VirtualMachineSnapshot {
	t.Helper()
	s := &v1alpha2.VirtualMachineSnapshot{}
	eventually(t, timeout, fmt.Sprintf("vmsnapshot %s %s %s", name, phase, reason), func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(s.Status.Conditions, v1alpha2.VMSnapshotConditionReady)
		if s.Status.Phase != phase || c == nil {
			return false, fmt.Sprintf("%s %+v", s.Status.Phase, s.Status.Conditions)
		}
		if reason != "" && c.Reason != reason {
			return false, c.Reason + ": " + c.Message
		}
		for _, w := range words {
			if !strings.Contains(c.Message, w) {
				return false, c.Reason + ": " + c.Message
			}
		}
		return true, ""
	})
	return s
}

// twoDiskVM makes a Stopped VM (runPolicy policy) with a root disk from an image and a
// blank data disk, and writes a pattern on each.
func twoDiskVM(t *testing.T, ns, name string, policy v1alpha2.RunPolicy) (root, data *v1alpha2.VirtualDisk) {
	t.Helper()
	makeImageDisk(t, ns, name+"-root")
	root = waitDisk(t, ns, name+"-root", v1alpha2.ImageReady)
	data = blankDisk(t, ns, name+"-data", "8Mi")
	vm := newVM(ns, name, root.Name, policy)
	vm.Spec.BlockDeviceRefs = append(vm.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.DiskDevice, Name: data.Name})
	createAll(t, vm)
	if policy != v1alpha2.AlwaysOn {
		waitPhase(t, ns, name, v1alpha2.MachineStopped)
	}
	// A VM is Stopped a moment before its vmip is recorded on it (a CI run's snapshot saw it
	// in between, and kept no address): the tests' snapshots are of a VM with its address.
	eventually(t, timeout, "the VM's vmip recorded", func() (bool, string) {
		st := getVM(t, ns, name).Status
		return st.VirtualMachineIPAddressName != "", fmt.Sprintf("%+v", st)
	})
	if err := qemuIO(t, root.Status.Path, "write -P 0x21 512k 64k"); err != nil {
		t.Fatal(err)
	}
	if err := qemuIO(t, data.Status.Path, "write -P 0x31 1M 64k"); err != nil {
		t.Fatal(err)
	}
	return root, data
}

// TestVMSnapshotOfStoppedVM: a snapshot of a Stopped VM takes one VirtualDiskSnapshot of
// each of its disks (owned by the VM snapshot, holding the disk's data), records the VM's
// spec, its disks' specs and (keepIPAddress Always) its address in its Secret, lists them
// in status.resources, and is Ready and consistent. Bad input is refused with what to fix.
func TestVMSnapshotOfStoppedVM(t *testing.T) {
	ns := newNamespace(t)
	root, data := twoDiskVM(t, ns, "vm", v1alpha2.Manual)
	vm := getVM(t, ns, "vm")

	createAll(t, newVMSnapshot(ns, "snap", "vm", true, v1alpha2.KeepIPAddressAlways))
	s := waitVMSnapshot(t, ns, "snap", v1alpha2.VMSnapshotReady, v1alpha2.ReasonVMSnapshotReady, "2 disk snapshot(s)")
	if s.Status.Consistent == nil || !*s.Status.Consistent {
		t.Errorf("a snapshot of a stopped VM is not consistent: %v", s.Status.Consistent)
	}
	want := []string{"snap-vm-root", "snap-vm-data"}
	if fmt.Sprint(s.Status.VirtualDiskSnapshotNames) != fmt.Sprint(want) {
		t.Errorf("virtualDiskSnapshotNames %v, want %v", s.Status.VirtualDiskSnapshotNames, want)
	}
	for i, name := range want {
		ds := &v1alpha2.VirtualDiskSnapshot{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ds); err != nil {
			t.Fatal(err)
		}
		if !metav1.IsControlledBy(ds, s) || ds.Status.Phase != v1alpha2.SnapshotReady || !ds.Spec.RequiredConsistency {
			t.Errorf("disk snapshot %s: owners %v, phase %s, requiredConsistency %v", name, ds.OwnerReferences, ds.Status.Phase, ds.Spec.RequiredConsistency)
		}
		check := []string{"read -P 0x21 512k 64k", "read -P 0x31 1M 64k"}[i]
		if err := qemuIO(t, storage.SnapshotPath(storageDir, ds), check); err != nil {
			t.Errorf("disk snapshot %s lacks its disk's data: %v", name, err)
		}
	}
	var kinds []string
	for _, r := range s.Status.Resources {
		kinds = append(kinds, r.Kind+"/"+r.Name)
	}
	wantRes := fmt.Sprintf("[VirtualMachine/vm VirtualDisk/%s VirtualDisk/%s VirtualMachineIPAddress/%s]", root.Name, data.Name, vm.Status.VirtualMachineIPAddressName)
	if fmt.Sprint(kinds) != wantRes || vm.Status.VirtualMachineIPAddressName == "" {
		t.Errorf("status.resources %v, want %s", kinds, wantRes)
	}
	sec := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: s.Status.VirtualMachineSnapshotSecretName}, sec); err != nil {
		t.Fatal(err)
	}
	content, err := vmsnapshot.Decode(sec)
	if err != nil {
		t.Fatal(err)
	}
	if !metav1.IsControlledBy(sec, s) || content.VM.UID != vm.UID || len(content.VM.Spec.BlockDeviceRefs) != 2 || content.VM.Spec.RunPolicy != v1alpha2.Manual ||
		len(content.Disks) != 2 || content.Disks[1].Spec.PersistentVolumeClaim.Size.String() != "8Mi" ||
		content.Address == nil || content.Address.Name != vm.Status.VirtualMachineIPAddressName {
		t.Errorf("the snapshot's Secret (owners %v) holds %+v", sec.OwnerReferences, content)
	}

	// keepIPAddress Never keeps no address; it defaults to Always, requiredConsistency to true.
	createAll(t, newVMSnapshot(ns, "no-ip", "vm", true, v1alpha2.KeepIPAddressNever))
	if s := waitVMSnapshot(t, ns, "no-ip", v1alpha2.VMSnapshotReady, ""); len(s.Status.Resources) != 3 {
		t.Errorf("a snapshot with keepIPAddress Never lists %v", s.Status.Resources)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha2.GroupVersion.String(), "kind": v1alpha2.VirtualMachineSnapshotKind,
		"metadata": map[string]any{"name": "defaulted", "namespace": ns},
		"spec":     map[string]any{"virtualMachineName": "vm"},
	}}
	if err := k8s.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	if req, _, _ := unstructured.NestedBool(u.Object, "spec", "requiredConsistency"); !req {
		t.Errorf("requiredConsistency does not default to true: %v", u.Object["spec"])
	}
	if keep, _, _ := unstructured.NestedString(u.Object, "spec", "keepIPAddress"); keep != "Always" {
		t.Errorf("keepIPAddress defaults to %q, want Always", keep)
	}
	for _, c := range []struct {
		obj   *v1alpha2.VirtualMachineSnapshot
		words string
	}{
		{newVMSnapshot(ns, "nameless", "", true, v1alpha2.KeepIPAddressNever), "virtualMachineName"},
		{newVMSnapshot(ns, "bad-keep", "vm", true, "Sometimes"), `Unsupported value: "Sometimes"`},
	} {
		if err := k8s.Create(ctx, c.obj); err == nil || !strings.Contains(err.Error(), c.words) {
			t.Errorf("%s was not refused with %q: %v", c.obj.Name, c.words, err)
		}
	}
	s.Spec.VirtualMachineName = "other"
	if err := k8s.Update(ctx, s); err == nil || !strings.Contains(err.Error(), "spec cannot change") {
		t.Errorf("changing a VM snapshot's VM was not refused: %v", err)
	}
	// A snapshot of a VM that does not exist waits and says so.
	createAll(t, newVMSnapshot(ns, "ghost", "ghost", true, v1alpha2.KeepIPAddressNever))
	waitVMSnapshot(t, ns, "ghost", v1alpha2.VMSnapshotPending, v1alpha2.ReasonVMSnapshotWaitingForVM, "ghost is not found")

	// `kubectl get vmsnapshot` prints Deckhouse's columns.
	out := printed(t, ns, "virtualmachinesnapshots", "snap")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME PHASE CONSISTENT AGE" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "snap Ready true ") {
		t.Errorf("kubectl get vmsnapshot prints\n%s", out)
	}
}

// TestVMSnapshotOfRunningVM: with requiredConsistency true the snapshot of a running VM
// stays Pending (PotentiallyInconsistent) and says why and what to do, taking no disk
// snapshot; with false it is taken at once (consistent false). When the VM stops, the
// waiting snapshot is taken, consistent.
func TestVMSnapshotOfRunningVM(t *testing.T) {
	ns := newNamespace(t)
	twoDiskVM(t, ns, "vm", v1alpha2.Manual)
	createAll(t, newOp(ns, "start", "vm", v1alpha2.OpStart))
	pod := waitPod(t, ns, "vm")
	runPod(t, &pod, "n1")
	waitPhase(t, ns, "vm", v1alpha2.MachineRunning)

	createAll(t, newVMSnapshot(ns, "strict", "vm", true, v1alpha2.KeepIPAddressAlways), newVMSnapshot(ns, "loose", "vm", false, v1alpha2.KeepIPAddressAlways))
	strict := waitVMSnapshot(t, ns, "strict", v1alpha2.VMSnapshotPending, v1alpha2.ReasonVMSnapshotPotentiallyInconsistent,
		"VirtualMachine vm is Running", "qemu-guest-agent", "Stopped", "requiredConsistency: false")
	if c := meta.FindStatusCondition(strict.Status.Conditions, v1alpha2.VMSnapshotConditionVMReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("VirtualMachineReady of a waiting snapshot of a ready VM: %+v", c)
	}
	loose := waitVMSnapshot(t, ns, "loose", v1alpha2.VMSnapshotReady, v1alpha2.ReasonVMSnapshotReady)
	if loose.Status.Consistent == nil || *loose.Status.Consistent {
		t.Errorf("a snapshot taken while the VM runs has consistent %v, want false", loose.Status.Consistent)
	}
	strict = waitVMSnapshot(t, ns, "strict", v1alpha2.VMSnapshotPending, v1alpha2.ReasonVMSnapshotPotentiallyInconsistent)
	if len(strict.Status.VirtualDiskSnapshotNames) != 0 || strict.Status.VirtualMachineSnapshotSecretName != "" {
		t.Errorf("a waiting snapshot took disk snapshots %v / Secret %q", strict.Status.VirtualDiskSnapshotNames, strict.Status.VirtualMachineSnapshotSecretName)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "strict-vm-root"}, &v1alpha2.VirtualDiskSnapshot{}); client.IgnoreNotFound(err) != nil || err == nil {
		t.Errorf("a waiting VM snapshot made a disk snapshot: %v", err)
	}

	setPodStatus(t, &pod, corev1.PodFailed, false)
	waitPhase(t, ns, "vm", v1alpha2.MachineStopped)
	if s := waitVMSnapshot(t, ns, "strict", v1alpha2.VMSnapshotReady, v1alpha2.ReasonVMSnapshotReady); s.Status.Consistent == nil || !*s.Status.Consistent {
		t.Errorf("the snapshot taken once the VM stopped has consistent %v", s.Status.Consistent)
	}
}

// printed is what `kubectl get` prints for one object (or, with name "", every object of
// the namespace): the apiserver's Table, asked for over HTTP. (ferryK runs kubectl in this
// process, and its log setup races with the controller's logging under -race.)
func printed(t *testing.T, ns, plural, name string) string {
	t.Helper()
	hc, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("%s/apis/%s/namespaces/%s/%s", strings.TrimSuffix(restCfg.Host, "/"), v1alpha2.GroupVersion.String(), ns, plural)
	if name != "" {
		url += "/" + name
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var table metav1.Table
	if err := json.NewDecoder(resp.Body).Decode(&table); err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range table.ColumnDefinitions {
		cols = append(cols, strings.ToUpper(c.Name))
	}
	lines := []string{strings.Join(cols, " ")}
	for _, r := range table.Rows {
		var cells []string
		for _, c := range r.Cells {
			cells = append(cells, fmt.Sprint(c))
		}
		lines = append(lines, strings.Join(cells, " "))
	}
	return strings.Join(lines, "\n")
}
