package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// timeout bounds each wait: generous, since the whole suite runs under -race beside
// every other package on two cores (a wait that holds ends at once).
const timeout = 45 * time.Second

var ctx = context.Background()

// makeImageDisk creates a ClusterVirtualImage from a fresh raw file and a disk from it.
func makeImageDisk(t *testing.T, ns, disk string) {
	t.Helper()
	img := &v1alpha2.ClusterVirtualImage{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-img"},
		Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{
			Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: "file://" + writeRawImage(t, ns+".img")}}},
	}
	if err := k8s.Create(ctx, img); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	vd := &v1alpha2.VirtualDisk{
		ObjectMeta: metav1.ObjectMeta{Name: disk, Namespace: ns},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
			ObjectRef: &v1alpha2.ObjectRefSource{Kind: "ClusterVirtualImage", Name: img.Name}}},
	}
	if err := k8s.Create(ctx, vd); err != nil {
		t.Fatal(err)
	}
}

func newVM(ns, name, disk string, policy v1alpha2.RunPolicy) *v1alpha2.VirtualMachine {
	return &v1alpha2.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha2.VirtualMachineSpec{
			RunPolicy:       policy,
			CPU:             v1alpha2.CPUSpec{Cores: 1},
			Memory:          v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
			BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: disk}},
			NodeSelector:    map[string]string{"kubernetes.io/os": "linux"},
		},
	}
}

func getVM(t *testing.T, ns, name string) *v1alpha2.VirtualMachine {
	t.Helper()
	vm := &v1alpha2.VirtualMachine{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

// livePods are the VM's launcher pods that are neither ended nor being deleted.
func livePods(t *testing.T, ns, vm string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{v1alpha2.LabelVMName: vm}); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			out = append(out, p)
		}
	}
	return out
}

func waitPod(t *testing.T, ns, vm string) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	eventually(t, timeout, "a launcher pod for "+vm, func() (bool, string) {
		pods := livePods(t, ns, vm)
		if len(pods) == 1 {
			pod = pods[0]
			return true, ""
		}
		return false, fmt.Sprintf("%d live pods", len(pods))
	})
	return pod
}

func waitPhase(t *testing.T, ns, name string, phase v1alpha2.MachinePhase) *v1alpha2.VirtualMachine {
	t.Helper()
	var vm *v1alpha2.VirtualMachine
	eventually(t, timeout, fmt.Sprintf("VM %s %s", name, phase), func() (bool, string) {
		vm = getVM(t, ns, name)
		return vm.Status.Phase == phase, fmt.Sprintf("phase %s, conditions %+v", vm.Status.Phase, vm.Status.Conditions)
	})
	return vm
}

// runPod plays the kubelet: binds the pod to node and reports it Running and Ready.
func runPod(t *testing.T, pod *corev1.Pod, node string) {
	t.Helper()
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}, Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	if err := k8s.SubResource("binding").Create(ctx, pod, b); err != nil {
		t.Fatal(err)
	}
	setPodStatus(t, pod, corev1.PodRunning, true)
}

func setPodStatus(t *testing.T, pod *corev1.Pod, phase corev1.PodPhase, ready bool) {
	t.Helper()
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Fatal(err)
	}
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	now := metav1.Now()
	pod.Status.Phase = phase
	pod.Status.StartTime = &now
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: now}}
	if phase == corev1.PodSucceeded || phase == corev1.PodFailed {
		code := int32(0)
		if phase == corev1.PodFailed {
			code = 2
		}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "compute", State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "test", FinishedAt: now}}}}
	}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// TestVMRunsWithAddressAndPlacement: a VM gets a lease on an address, a launcher pod that
// carries its placement and size, and is Running once its pod is Ready.
func TestVMRunsWithAddressAndPlacement(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "vm1", "root", "")
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "vm1")
	if !strings.HasPrefix(pod.Name, "virt-launcher-vm1-") {
		t.Errorf("pod name %s", pod.Name)
	}
	if ref := metav1.GetControllerOf(&pod); ref == nil || ref.Kind != "VirtualMachine" || ref.Name != "vm1" {
		t.Errorf("pod controller ref %+v", ref)
	}
	if pod.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("placement not copied: %v", pod.Spec.NodeSelector)
	}
	mem := pod.Spec.Containers[0].Resources.Requests[corev1.ResourceMemory]
	if mem.Cmp(resource.MustParse("128Mi")) <= 0 {
		t.Errorf("memory request %s does not cover the guest", mem.String())
	}
	if got := getVM(t, ns, "vm1"); got.Spec.RunPolicy != v1alpha2.AlwaysOnUnlessStoppedManually || got.Spec.LiveMigrationPolicy != v1alpha2.PreferSafe {
		t.Errorf("defaults: runPolicy %q liveMigrationPolicy %q", got.Spec.RunPolicy, got.Spec.LiveMigrationPolicy)
	}
	runPod(t, &pod, "node-a")
	got := waitPhase(t, ns, "vm1", v1alpha2.MachineRunning)
	if got.Status.NodeName != "node-a" {
		t.Errorf("nodeName %q", got.Status.NodeName)
	}
	r := ipam.MustParseRanges(ipam.DefaultRanges)
	if err := r.Check(got.Status.IPAddress); err != nil {
		t.Errorf("address: %v", err)
	}
	var lease v1alpha2.VirtualMachineIPAddressLease
	if err := k8s.Get(ctx, client.ObjectKey{Name: ipam.LeaseName(got.Status.IPAddress)}, &lease); err != nil ||
		lease.Spec.VirtualMachineIPAddressRef == nil || lease.Spec.VirtualMachineIPAddressRef.Name != got.Status.VirtualMachineIPAddressName {
		t.Errorf("lease of %s: %v %+v, want it held by the VM's VirtualMachineIPAddress %q", got.Status.IPAddress, err, lease.Spec, got.Status.VirtualMachineIPAddressName)
	}
	var vd v1alpha2.VirtualDisk
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "root"}, &vd); err != nil || len(vd.Status.AttachedToVirtualMachines) != 1 {
		t.Errorf("disk attachment: %v %+v", err, vd.Status.AttachedToVirtualMachines)
	}
}

// TestRunPolicyAfterPodEnds: what each runPolicy does when the guest shuts itself down
// (pod Succeeded) or crashes (pod Failed).
func TestRunPolicyAfterPodEnds(t *testing.T) {
	tests := []struct {
		policy      v1alpha2.RunPolicy
		end         corev1.PodPhase
		wantRestart bool
	}{
		{v1alpha2.AlwaysOnUnlessStoppedManually, corev1.PodFailed, true},
		{v1alpha2.AlwaysOnUnlessStoppedManually, corev1.PodSucceeded, false},
		{v1alpha2.AlwaysOn, corev1.PodSucceeded, true},
		{v1alpha2.AlwaysOn, corev1.PodFailed, true},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%s", tc.policy, tc.end), func(t *testing.T) {
			ns := newNamespace(t)
			makeImageDisk(t, ns, "root")
			if err := k8s.Create(ctx, newVM(ns, "vm", "root", tc.policy)); err != nil {
				t.Fatal(err)
			}
			first := waitPod(t, ns, "vm")
			runPod(t, &first, "node-a")
			waitPhase(t, ns, "vm", v1alpha2.MachineRunning)
			setPodStatus(t, &first, tc.end, false)
			if tc.wantRestart {
				second := waitPod(t, ns, "vm")
				if second.Name == first.Name {
					t.Fatalf("no new pod")
				}
				return
			}
			vm := waitPhase(t, ns, "vm", v1alpha2.MachineStopped)
			if vm.Annotations[v1alpha2.AnnotationPowerState] != "Off" {
				t.Errorf("power state %q, want Off", vm.Annotations[v1alpha2.AnnotationPowerState])
			}
			c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionRunning)
			if c == nil || c.Reason != v1alpha2.ReasonGuestShutdown {
				t.Errorf("Running condition %+v, want reason %s", c, v1alpha2.ReasonGuestShutdown)
			}
			if n := len(livePods(t, ns, "vm")); n != 0 {
				t.Errorf("%d live pods after a guest shutdown", n)
			}
		})
	}
}

// TestManualVMStartsOnlyOnRequest: a Manual VM stays off until a Start operation.
func TestManualVMStartsOnlyOnRequest(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newVM(ns, "vm", "root", v1alpha2.Manual)); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, ns, "vm", v1alpha2.MachineStopped)
	op := newOp(ns, "start", "vm", v1alpha2.OpStart)
	if err := k8s.Create(ctx, op); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "vm")
	runPod(t, &pod, "node-a")
	waitOp(t, op, v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted)
}

// TestDeleteReleasesAddressAndDisk: deleting a VM removes its pod, then the
// VirtualMachineIPAddress it made for itself (its lease is Released, kept for the
// namespace) and its hold on the disk.
func TestDeleteReleasesAddressAndDisk(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newVM(ns, "vm", "root", "")); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "vm")
	runPod(t, &pod, "node-a")
	vm := waitPhase(t, ns, "vm", v1alpha2.MachineRunning)
	if err := k8s.Delete(ctx, vm); err != nil {
		t.Fatal(err)
	}
	// The kubelet's part: the pod is being deleted; finish it.
	eventually(t, timeout, "pod marked for deletion", func() (bool, string) {
		var p corev1.Pod
		err := k8s.Get(ctx, client.ObjectKeyFromObject(&pod), &p)
		return err == nil && p.DeletionTimestamp != nil, fmt.Sprint(err)
	})
	if err := k8s.Delete(ctx, &pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "VM gone", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(vm), &v1alpha2.VirtualMachine{})
		return client.IgnoreNotFound(err) == nil && err != nil, fmt.Sprint(err)
	})
	eventually(t, timeout, "the VM's VirtualMachineIPAddress gone, its lease released", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: vm.Status.VirtualMachineIPAddressName}, &v1alpha2.VirtualMachineIPAddress{})
		var l v1alpha2.VirtualMachineIPAddressLease
		lerr := k8s.Get(ctx, client.ObjectKey{Name: ipam.LeaseName(vm.Status.IPAddress)}, &l)
		released := lerr == nil && l.Status.Phase == v1alpha2.VirtualMachineIPAddressLeasePhaseReleased &&
			l.Spec.VirtualMachineIPAddressRef != nil && l.Spec.VirtualMachineIPAddressRef.Name == "" && l.Spec.VirtualMachineIPAddressRef.Namespace == ns
		return apierrors.IsNotFound(err) && released, fmt.Sprintf("vmip %s: %v; lease: %v %+v %s", vm.Status.VirtualMachineIPAddressName, err, lerr, l.Spec.VirtualMachineIPAddressRef, l.Status.Phase)
	})
	var vd v1alpha2.VirtualDisk
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "root"}, &vd); err != nil || len(vd.Status.AttachedToVirtualMachines) != 0 {
		t.Errorf("disk still attached: %v %+v", err, vd.Status.AttachedToVirtualMachines)
	}
}
