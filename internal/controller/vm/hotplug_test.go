package vm

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

func hp(name, path string) hotplugDisk {
	return hotplugDisk{attachment: name, file: &AttachmentFile{Path: path, Format: "qcow2"}}
}

func hpPod(args []string, ann map[string]any) *corev1.Pod {
	p := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Args: args}}}}
	p.Annotations = map[string]string{}
	for k, v := range ann {
		b, _ := json.Marshal(v)
		p.Annotations[k] = string(b)
	}
	return p
}

// TestAssignSlots: a disk keeps the slot its pod has it at (asked for, reported, started
// with); a new one takes the highest slot no device holds, a device being detached
// included.
func TestAssignSlots(t *testing.T) {
	a, b, c := hp("a", "/s/a"), hp("b", "/s/b"), hp("c", "/s/c")
	slots := func(devs []v1alpha2.HotplugDevice) []int {
		var out []int
		for _, d := range devs {
			out = append(out, d.Slot)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		disks []hotplugDisk
		pod   *corev1.Pod
		want  []int // slots of a, b, c in the result's order (by slot)
	}{
		{"fresh pod", []hotplugDisk{a, b}, hpPod(nil, nil), []int{0x1e, 0x1f}},
		{"kept as asked", []hotplugDisk{a, b}, hpPod(nil, map[string]any{v1alpha2.AnnotationHotplug: []v1alpha2.HotplugDevice{b.device(0x1f)}}), []int{0x1e, 0x1f}},
		{"a migration target started with them, before its agent reports", []hotplugDisk{a, b},
			hpPod(launcherpod.WithHotplugDisks(nil, []v1alpha2.HotplugDevice{a.device(0x1d), b.device(0x1f)}), nil), []int{0x1d, 0x1f}},
		{"a device being detached holds its slot", []hotplugDisk{c},
			hpPod(nil, map[string]any{v1alpha2.AnnotationHotplug: []v1alpha2.HotplugDevice{},
				v1alpha2.AnnotationHotplugStatus: []v1alpha2.HotplugDeviceStatus{{HotplugDevice: a.device(0x1f), State: v1alpha2.HotplugDetaching}}}), []int{0x1e}},
		{"a failed one does not", []hotplugDisk{c},
			hpPod(nil, map[string]any{v1alpha2.AnnotationHotplugStatus: []v1alpha2.HotplugDeviceStatus{{HotplugDevice: a.device(0x1f), State: v1alpha2.HotplugFailed}}}), []int{0x1f}},
	} {
		if got := slots(assignSlots(tc.disks, tc.pod)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: slots %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestJudgeAttachments: the spec's devices and older attachments of the same device
// conflict; the VM has room for 16 devices, spec first.
func TestJudgeAttachments(t *testing.T) {
	vm := &v1alpha2.VirtualMachine{Spec: v1alpha2.VirtualMachineSpec{BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: "root"}}}}
	t0 := time.Now()
	att := func(name string, kind v1alpha2.VMBDAObjectRefKind, dev string, age int) v1alpha2.VirtualMachineBlockDeviceAttachment {
		return v1alpha2.VirtualMachineBlockDeviceAttachment{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second))},
			Spec: v1alpha2.VirtualMachineBlockDeviceAttachmentSpec{VirtualMachineName: "vm", BlockDeviceRef: v1alpha2.VMBDAObjectRef{Kind: kind, Name: dev}}}
	}
	list := []v1alpha2.VirtualMachineBlockDeviceAttachment{
		att("root-again", v1alpha2.VMBDAKindVirtualDisk, "root", 0),
		att("first", v1alpha2.VMBDAKindVirtualDisk, "data", 1),
		att("second", v1alpha2.VMBDAKindVirtualDisk, "data", 2),
		att("image", v1alpha2.VMBDAKindClusterVirtualImage, "data", 3), // another kind, another device
	}
	for i := range 14 {
		list = append(list, att("fill-"+string(rune('a'+i)), v1alpha2.VMBDAKindVirtualDisk, "d"+string(rune('a'+i)), 10+i))
	}
	v := JudgeAttachments(vm, list)
	if v["root-again"].Conflict == "" || v["second"].Conflict == "" || !v["first"].Admitted || !v["image"].Admitted {
		t.Errorf("conflicts: %+v", v)
	}
	// root + first + image = 3; 13 more fit, the 14th does not.
	if !v["fill-m"].Admitted || v["fill-n"].Admitted || v["fill-n"].Capacity {
		t.Errorf("capacity: fill-m %+v, fill-n %+v", v["fill-m"], v["fill-n"])
	}
	if v := JudgeAttachments(nil, list[1:2]); !v["first"].Admitted {
		t.Errorf("without a VM: %+v", v)
	}
}

// TestWebhookRefusesADeviceAttachedByAnAttachment: a VM's spec cannot gain a block device
// one of its attachments hot-plugs (as in Deckhouse); one being deleted, another VM's, or a
// device the spec had already do not count.
func TestWebhookRefusesADeviceAttachedByAnAttachment(t *testing.T) {
	s := runtime.NewScheme()
	_ = v1alpha2.AddToScheme(s)
	att := func(name, vm, disk string, deleting bool) *v1alpha2.VirtualMachineBlockDeviceAttachment {
		a := &v1alpha2.VirtualMachineBlockDeviceAttachment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: v1alpha2.VirtualMachineBlockDeviceAttachmentSpec{VirtualMachineName: vm, BlockDeviceRef: v1alpha2.VMBDAObjectRef{Kind: v1alpha2.VMBDAKindVirtualDisk, Name: disk}}}
		if deleting {
			now := metav1.Now()
			a.DeletionTimestamp, a.Finalizers = &now, []string{v1alpha2.FinalizerVMBDA}
		}
		return a
	}
	reader := fake.NewClientBuilder().WithScheme(s).WithObjects(att("a1", "vm", "data", false), att("a2", "vm", "old", true), att("a3", "other", "more", false)).Build()
	w := &Webhook{APIReader: reader, Decoder: admission.NewDecoder(s)}
	vm := func(disks ...string) runtime.RawExtension {
		v := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "vm"}}
		for _, d := range disks {
			v.Spec.BlockDeviceRefs = append(v.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.DiskDevice, Name: d})
		}
		b, _ := json.Marshal(v)
		return runtime.RawExtension{Raw: b}
	}
	for _, c := range []struct {
		name     string
		op       admissionv1.Operation
		obj, old runtime.RawExtension
		refused  bool
	}{
		{"created with an attached disk", admissionv1.Create, vm("root", "data"), runtime.RawExtension{}, true},
		{"gains an attached disk", admissionv1.Update, vm("root", "data"), vm("root"), true},
		{"had it already", admissionv1.Update, vm("root", "data"), vm("root", "data"), false},
		{"an attachment being deleted", admissionv1.Update, vm("root", "old"), vm("root"), false},
		{"another VM's attachment", admissionv1.Update, vm("root", "more"), vm("root"), false},
	} {
		resp := w.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Operation: c.op, Object: c.obj, OldObject: c.old}})
		if resp.Allowed == c.refused {
			t.Errorf("%s: allowed %v (%+v)", c.name, resp.Allowed, resp.Result)
		} else if c.refused && !strings.Contains(resp.Result.Message, "already attached to the virtual machine via VirtualMachineBlockDeviceAttachment") {
			t.Errorf("%s: %s", c.name, resp.Result.Message)
		}
	}
}
