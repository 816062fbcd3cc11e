package controller_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// blankDisk creates an empty VirtualDisk of size and waits until it is Ready.
func blankDisk(t *testing.T, ns, name, size string) *v1alpha2.VirtualDisk {
	t.Helper()
	q := resource.MustParse(size)
	vd := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha2.VirtualDiskSpec{PersistentVolumeClaim: v1alpha2.DiskClaim{Size: &q}}}
	if err := k8s.Create(ctx, vd); err != nil {
		t.Fatal(err)
	}
	return waitDisk(t, ns, name, v1alpha2.ImageReady)
}

func newAttachment(ns, name, vm string, kind v1alpha2.VMBDAObjectRefKind, device string) *v1alpha2.VirtualMachineBlockDeviceAttachment {
	return &v1alpha2.VirtualMachineBlockDeviceAttachment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha2.VirtualMachineBlockDeviceAttachmentSpec{VirtualMachineName: vm,
			BlockDeviceRef: v1alpha2.VMBDAObjectRef{Kind: kind, Name: device}},
	}
}

// waitAttachment waits for the attachment's phase and its Attached condition's reason (any
// when ""), with words in its message; it returns the attachment.
func waitAttachment(t *testing.T, ns, name string, phase v1alpha2.BlockDeviceAttachmentPhase, reason string, words ...string) *v1alpha2.VirtualMachineBlockDeviceAttachment {
	t.Helper()
	a := &v1alpha2.VirtualMachineBlockDeviceAttachment{}
	eventually(t, timeout, fmt.Sprintf("attachment %s %s %s", name, phase, reason), func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, a); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(a.Status.Conditions, v1alpha2.VMBDAConditionAttached)
		if c == nil {
			return false, string(a.Status.Phase) + ", no Attached condition"
		}
		ok := a.Status.Phase == phase && (reason == "" || c.Reason == reason)
		for _, w := range words {
			ok = ok && strings.Contains(c.Message, w)
		}
		return ok, fmt.Sprintf("%s; Attached %s %s: %s", a.Status.Phase, c.Status, c.Reason, c.Message)
	})
	return a
}

// wantedDisks waits until the pod's VM is asked for exactly n hot-plugged disks and returns them.
func wantedDisks(t *testing.T, pod *corev1.Pod, n int) []v1alpha2.HotplugDevice {
	t.Helper()
	var want []v1alpha2.HotplugDevice
	eventually(t, timeout, fmt.Sprintf("%d hot-plugged disks asked of pod %s", n, pod.Name), func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err.Error()
		}
		var ok bool
		want, ok = launcherpod.HotplugWanted(pod)
		return ok && len(want) == n, pod.Annotations[v1alpha2.AnnotationHotplug]
	})
	return want
}

// reportDisks plays the node agent: the pod's launcher has devs in state.
func reportDisks(t *testing.T, pod *corev1.Pod, state string, devs ...v1alpha2.HotplugDevice) {
	t.Helper()
	out := []v1alpha2.HotplugDeviceStatus{}
	for _, d := range devs {
		out = append(out, v1alpha2.HotplugDeviceStatus{HotplugDevice: d, Target: launcherpod.HotplugTarget(d.Slot), State: state})
	}
	b, _ := json.Marshal(out)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{v1alpha2.AnnotationHotplugStatus: string(b)}}})
	if err := k8s.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
}

func holderOf(t *testing.T, ns, disk string) []v1alpha2.AttachedVirtualMachine {
	t.Helper()
	var d v1alpha2.VirtualDisk
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: disk}, &d); err != nil {
		t.Fatal(err)
	}
	return d.Status.AttachedToVirtualMachines
}

// TestAttachmentLifecycle: an attachment of a blank disk to a running VM holds the disk for
// the VM, asks the VM's launcher pod for it at the top hot-plug slot (InProgress), and is
// Attached once the node agent reports QEMU has it; the VM's status.blockDeviceRefs lists
// it beside its own disk. A second attachment of the same disk conflicts; another VM's
// attachment of it is refused (the disk is in use); one of a VirtualImage waits for the
// image and goes on once it is Ready.
// Deleted, the attachment waits (Terminating, DetachPending) until the agent reports the
// disk gone, then releases it.
func TestAttachmentLifecycle(t *testing.T) {
	ns := newNamespace(t)
	nodeA, _ := migrationNodes(t, ns)
	pod := runningVM(t, ns, nodeA)
	data := blankDisk(t, ns, "data", "64Mi")

	createAll(t, newAttachment(ns, "att", "m", v1alpha2.VMBDAKindVirtualDisk, "data"))
	waitAttachment(t, ns, "att", v1alpha2.BlockDeviceAttachmentInProgress, v1alpha2.ReasonAttachmentRequestSent)
	if h := holderOf(t, ns, "data"); len(h) != 1 || h[0].Name != "m" {
		t.Fatalf("disk data held by %v, want m", h)
	}
	want := wantedDisks(t, &pod, 1)
	if d := want[0]; d.Slot != 0x1f || d.Name != "att" || d.Path != data.Status.Path || d.Format != "qcow2" || d.ReadOnly {
		t.Fatalf("hot-plug asked for %+v (disk at %s)", d, data.Status.Path)
	}
	reportDisks(t, &pod, v1alpha2.HotplugAttaching, want...)
	waitAttachment(t, ns, "att", v1alpha2.BlockDeviceAttachmentInProgress, v1alpha2.ReasonAttachmentRequestSent)
	reportDisks(t, &pod, v1alpha2.HotplugAttached, want...)
	a := waitAttachment(t, ns, "att", v1alpha2.BlockDeviceAttachmentAttached, v1alpha2.ReasonAttached, "hotplug-1f")
	if a.Status.VirtualMachineName != "m" || !slices.Contains(a.Finalizers, v1alpha2.FinalizerVMBDA) {
		t.Errorf("attachment status %+v, finalizers %v", a.Status, a.Finalizers)
	}
	for _, c := range []string{v1alpha2.VMBDAConditionBlockDeviceReady, v1alpha2.VMBDAConditionVirtualMachineReady, v1alpha2.VMBDAConditionCapacityAvailable} {
		if !meta.IsStatusConditionTrue(a.Status.Conditions, c) {
			t.Errorf("condition %s not True: %+v", c, a.Status.Conditions)
		}
	}
	eventually(t, timeout, "the VM's status.blockDeviceRefs", func() (bool, string) {
		refs := getVM(t, ns, "m").Status.BlockDeviceRefs
		ok := len(refs) == 2 &&
			refs[0] == v1alpha2.BlockDeviceStatusRef{Kind: "VirtualDisk", Name: "d", Size: refs[0].Size, Target: "disk0", Attached: true, BootOrder: 1} &&
			refs[1] == v1alpha2.BlockDeviceStatusRef{Kind: "VirtualDisk", Name: "data", Size: "64Mi", Target: "hotplug-1f", Attached: true,
				Hotplugged: true, VirtualMachineBlockDeviceAttachmentName: "att"}
		return ok, fmt.Sprintf("%+v", refs)
	})

	// The same disk again for the same VM: a conflict. For another VM: in use.
	createAll(t, newAttachment(ns, "dup", "m", v1alpha2.VMBDAKindVirtualDisk, "data"))
	waitAttachment(t, ns, "dup", v1alpha2.BlockDeviceAttachmentFailed, v1alpha2.ReasonConflict, "att")
	if err := k8s.Create(ctx, newVM(ns, "other", "d2", v1alpha2.AlwaysOff)); err != nil {
		t.Fatal(err)
	}
	createAll(t, newAttachment(ns, "steal", "other", v1alpha2.VMBDAKindVirtualDisk, "data"))
	waitAttachment(t, ns, "steal", v1alpha2.BlockDeviceAttachmentFailed, v1alpha2.ReasonNotAttached, "attached to VM m")
	createAll(t, newAttachment(ns, "vi", "m", v1alpha2.VMBDAKindVirtualImage, "some-image"))
	// A VirtualImage of the VM's namespace that does not exist (yet): the attachment waits.
	a = waitAttachment(t, ns, "vi", v1alpha2.BlockDeviceAttachmentPending, v1alpha2.ReasonNotAttached, `VirtualImage "some-image" not found`)
	if c := meta.FindStatusCondition(a.Status.Conditions, v1alpha2.VMBDAConditionBlockDeviceReady); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("BlockDeviceReady of a missing VirtualImage: %+v", c)
	}
	if n := len(wantedDisks(t, &pod, 1)); n != 1 {
		t.Fatalf("%d disks asked for", n)
	}
	// The image appears and becomes Ready: the attachment goes on by itself (the
	// controller watches VirtualImages), and the VM is asked for it read-only.
	createAll(t, newVI(ns, "some-image", httpSource(t, sourceFile(t, ns+"-att.qcow2", "-f", "qcow2", "1M"))))
	waitAttachment(t, ns, "vi", v1alpha2.BlockDeviceAttachmentInProgress, v1alpha2.ReasonAttachmentRequestSent)
	for _, d := range wantedDisks(t, &pod, 2) {
		if d.Name == "vi" && !d.ReadOnly {
			t.Errorf("hot-plug of the image asked for %+v: not read-only", d)
		}
	}
	for _, name := range []string{"dup", "steal", "vi"} {
		if err := k8s.Delete(ctx, newAttachment(ns, name, "", "", "")); err != nil {
			t.Fatal(err)
		}
	}
	if h := holderOf(t, ns, "data"); len(h) != 1 || h[0].Name != "m" {
		t.Fatalf("deleting the conflicting attachments released the disk: %v", h)
	}

	// Deleted: the disk is detached, then released.
	if err := k8s.Delete(ctx, newAttachment(ns, "att", "", "", "")); err != nil {
		t.Fatal(err)
	}
	wantedDisks(t, &pod, 0)
	eventually(t, timeout, "attachment att Terminating, waiting for the detach", func() (bool, string) {
		a := &v1alpha2.VirtualMachineBlockDeviceAttachment{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "att"}, a); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(a.Status.Conditions, v1alpha2.VMBDAConditionTerminating)
		return a.Status.Phase == v1alpha2.BlockDeviceAttachmentTerminating && c != nil && c.Reason == v1alpha2.ReasonDetachPending, fmt.Sprintf("%s %+v", a.Status.Phase, c)
	})
	if h := holderOf(t, ns, "data"); len(h) != 1 {
		t.Fatalf("the disk was released before its detach: %v", h)
	}
	reportDisks(t, &pod, v1alpha2.HotplugAttached)
	eventually(t, timeout, "attachment att gone, the disk released", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "att"}, &v1alpha2.VirtualMachineBlockDeviceAttachment{})
		h := holderOf(t, ns, "data")
		return client.IgnoreNotFound(err) == nil && err != nil && len(h) == 0, fmt.Sprintf("%v; holders %v", err, h)
	})
	eventually(t, timeout, "the VM's status.blockDeviceRefs without the disk", func() (bool, string) {
		refs := getVM(t, ns, "m").Status.BlockDeviceRefs
		return len(refs) == 1, fmt.Sprintf("%+v", refs)
	})
}

// TestAttachmentToStoppedVMAttachesAtStart: an attachment to a VM that does not run waits
// (Pending, VirtualMachineReady False) holding its disk; the VM's next launcher pod starts
// with the disk (--hotplug-disk) and asks for it, and the attachment is Attached once the
// agent reports it. After a restart (the pod ended) the new pod has it again.
func TestAttachmentToStoppedVMAttachesAtStart(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	waitDisk(t, ns, "root", v1alpha2.ImageReady)
	data := blankDisk(t, ns, "data", "32Mi")
	if err := k8s.Create(ctx, newVM(ns, "vm", "root", v1alpha2.Manual)); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, ns, "vm", v1alpha2.MachineStopped)
	createAll(t, newAttachment(ns, "att", "vm", v1alpha2.VMBDAKindVirtualDisk, "data"))
	a := waitAttachment(t, ns, "att", v1alpha2.BlockDeviceAttachmentPending, v1alpha2.ReasonNotAttached, "is Stopped", "attached when it runs")
	if c := meta.FindStatusCondition(a.Status.Conditions, v1alpha2.VMBDAConditionVirtualMachineReady); c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "waiting for the VirtualMachine to be Running") {
		t.Errorf("VirtualMachineReady %+v", c)
	}
	eventually(t, timeout, "disk data held for vm", func() (bool, string) {
		h := holderOf(t, ns, "data")
		return len(h) == 1 && h[0].Name == "vm", fmt.Sprint(h)
	})

	start := newOp(ns, "start", "vm", v1alpha2.OpStart)
	createAll(t, start)
	pod := waitPod(t, ns, "vm")
	wantArg := fmt.Sprintf("31,att,%s:qcow2", data.Status.Path)
	if args := pod.Spec.Containers[0].Args; !containsPair(args, "--hotplug-disk", wantArg) || !containsPair(args, "--hotplug-root", storageDir) {
		t.Fatalf("launcher args %q lack --hotplug-disk %s and --hotplug-root %s", args, wantArg, storageDir)
	}
	want := wantedDisks(t, &pod, 1)
	runPod(t, &pod, "n1")
	waitPhase(t, ns, "vm", v1alpha2.MachineRunning)
	waitAttachment(t, ns, "att", v1alpha2.BlockDeviceAttachmentInProgress, v1alpha2.ReasonAttachmentRequestSent)
	reportDisks(t, &pod, v1alpha2.HotplugAttached, want...)
	waitAttachment(t, ns, "att", v1alpha2.BlockDeviceAttachmentAttached, v1alpha2.ReasonAttached)

	// The VM crashes (runPolicy Manual keeps it off) and is started again: its new pod
	// has the disk too.
	setPodStatus(t, &pod, corev1.PodFailed, false)
	waitPhase(t, ns, "vm", v1alpha2.MachineStopped)
	createAll(t, newOp(ns, "start-again", "vm", v1alpha2.OpStart))
	// (The VM controller holds a new start back until 30 s after its last pod was created,
	// in case its cache has not seen that pod: createdPodWait.)
	eventually(t, 45*time.Second, "a new launcher pod", func() (bool, string) {
		pods := livePods(t, ns, "vm")
		if len(pods) == 1 && pods[0].Name != pod.Name {
			pod = pods[0]
			return true, ""
		}
		op := &v1alpha2.VirtualMachineOperation{}
		_ = k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "start-again"}, op)
		vm := getVM(t, ns, "vm")
		return false, fmt.Sprintf("%d live pods; op %s %s; vm %s %+v", len(pods), op.Status.Phase, op.Status.Progress, vm.Status.Phase, vm.Status.Conditions)
	})
	if args := pod.Spec.Containers[0].Args; !containsPair(args, "--hotplug-disk", wantArg) {
		t.Fatalf("the restarted VM's launcher args %q lack --hotplug-disk %s", args, wantArg)
	}
}

func containsPair(args []string, flag, value string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && args[i+1] == value {
			return true
		}
	}
	return false
}

// TestMigrationWaitsForHotplugAndCarriesTheDisks: an Evict while a disk is being attached
// waits (Pending, saying so); once the disk is attached the target pod starts with it at
// its slot, and the source is asked to migrate to a target with exactly that disk. The VM
// controller asks nothing of the pods while the VM migrates.
func TestMigrationWaitsForHotplugAndCarriesTheDisks(t *testing.T) {
	ns := newNamespace(t)
	nodeA, _ := migrationNodes(t, ns)
	source := runningVM(t, ns, nodeA)
	data := blankDisk(t, ns, "data", "16Mi")
	createAll(t, newAttachment(ns, "att", "m", v1alpha2.VMBDAKindVirtualDisk, "data"))
	want := wantedDisks(t, &source, 1)
	reportDisks(t, &source, v1alpha2.HotplugAttaching, want...)

	op := newOp(ns, "ev", "m", v1alpha2.OpEvict)
	createAll(t, op)
	eventually(t, timeout, "the Evict waits for the hot-plug", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return false, err.Error()
		}
		_, msg := op.Outcome()
		return op.Status.Phase == v1alpha2.OpPending && strings.Contains(msg, "disk att is being attached"), fmt.Sprintf("%s: %s", op.Status.Phase, msg)
	})
	if n := len(livePods(t, ns, "m")); n != 1 {
		t.Fatalf("%d live pods while the hot-plug runs", n)
	}
	reportDisks(t, &source, v1alpha2.HotplugAttached, want...)
	var target corev1.Pod
	eventually(t, timeout, "a migration target pod", func() (bool, string) {
		for _, p := range livePods(t, ns, "m") {
			if _, ok := p.Labels[v1alpha2.LabelMigrationTarget]; ok {
				target = p
				return true, ""
			}
		}
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(op), op)
		return false, op.Status.Progress
	})
	wantArg := fmt.Sprintf("31,att,%s:qcow2", data.Status.Path)
	if got := launcherpod.HotplugDisksOf(target.Spec.Containers[0].Args); len(got) != 1 || !containsPair(target.Spec.Containers[0].Args, "--hotplug-disk", wantArg) {
		t.Fatalf("target args %q, want --hotplug-disk %s once", target.Spec.Containers[0].Args, wantArg)
	}
	if _, ok := target.Annotations[v1alpha2.AnnotationHotplug]; ok {
		t.Errorf("the target is asked for disks before it runs the VM: %v", target.Annotations)
	}
	// Detaching now changes nothing on the pods: the VM migrates.
	if err := k8s.Delete(ctx, newAttachment(ns, "att", "", "", "")); err != nil {
		t.Fatal(err)
	}
	_, nodeB := migrationNodes2(ns)
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: target.Name, Namespace: ns}, Target: corev1.ObjectReference{Kind: "Node", Name: nodeB}}
	if err := k8s.SubResource("binding").Create(ctx, &target, b); err != nil {
		t.Fatal(err)
	}
	setPodStatus(t, &target, corev1.PodRunning, false)
	patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+v1alpha2.AnnotationIncomingURI+`":"tcp:10.0.0.2:4444"}}}`))
	if err := k8s.Patch(ctx, &target, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the source asked to migrate", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(&source), &source); err != nil {
			return false, err.Error()
		}
		return source.Annotations[v1alpha2.AnnotationMigrateTo] != "", "no request"
	})
	var req v1alpha2.MigrationRequest
	if err := json.Unmarshal([]byte(source.Annotations[v1alpha2.AnnotationMigrateTo]), &req); err != nil {
		t.Fatal(err)
	}
	if len(req.BlockDevices) != 1 || req.BlockDevices[0] != (v1alpha2.HotplugSlot{Slot: 31, Path: data.Status.Path}) {
		t.Fatalf("migration request's block devices %+v", req.BlockDevices)
	}
	if w, _ := launcherpod.HotplugWanted(&source); len(w) != 1 {
		t.Errorf("the source was asked to change its disks during the migration: %+v", w)
	}
}

// migrationNodes2 names the nodes migrationNodes made for ns.
func migrationNodes2(ns string) (string, string) { return "mig-a-" + ns, "mig-b-" + ns }
