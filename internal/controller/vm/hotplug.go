package vm

// Hot-plugged disks (VirtualMachineBlockDeviceAttachment, package vmbda). The attachment
// controller judges each attachment and takes a VirtualDisk's hold for the VM; the VM
// controller, one reconcile of a VM at a time, decides which disks the VM has:
//   - a running VM's launcher pod is asked for them in its annotation
//     v1alpha2.AnnotationHotplug (each at a PCI slot of its own, kept while the pod runs),
//     which its node agent hands to the launcher;
//   - a VM that starts gets them with its launcher's --hotplug-disk flags, so a hot-plugged
//     disk stays attached after a restart (the attachment stays, as in Deckhouse);
//   - nothing changes while the VM migrates: the migration controller starts the target
//     with the disks the source's QEMU has (package migration).
// Files are found as for spec.blockDeviceRefs (diskFile, imageFile), never from a status.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// IndexAttachmentVM is the attachments' cache index by spec.virtualMachineName.
const IndexAttachmentVM = "spec.virtualMachineName"

// IndexAttachments registers IndexAttachmentVM.
func IndexAttachments(ctx context.Context, fi client.FieldIndexer) error {
	return fi.IndexField(ctx, &v1alpha2.VirtualMachineBlockDeviceAttachment{}, IndexAttachmentVM, func(o client.Object) []string {
		return []string{o.(*v1alpha2.VirtualMachineBlockDeviceAttachment).Spec.VirtualMachineName}
	})
}

// AttachmentsOf lists the attachments that name the VM, oldest first (the order in which
// they are judged and get their slots).
func AttachmentsOf(ctx context.Context, c client.Reader, ns, vm string) ([]v1alpha2.VirtualMachineBlockDeviceAttachment, error) {
	var list v1alpha2.VirtualMachineBlockDeviceAttachmentList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingFields{IndexAttachmentVM: vm}); err != nil {
		return nil, fmt.Errorf("listing the VM's block device attachments: %w", err)
	}
	out := list.Items
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreationTimestamp.Equal(&out[j].CreationTimestamp) {
			return out[i].CreationTimestamp.Before(&out[j].CreationTimestamp)
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// Verdict is what the VM makes of one of its attachments, before its block device is
// looked at: no other attachment or spec.blockDeviceRefs has the same device, and the VM
// has room for it.
type Verdict struct {
	Admitted bool
	// Conflict names why not: another attachment or the spec has the device.
	Conflict string
	// Capacity is false when the VM has no room left for the device.
	Capacity bool
	// Message says why it is not admitted.
	Message string
}

// JudgeAttachments judges every attachment of vm (nil: the VM does not exist; list from
// AttachmentsOf). An attachment conflicts with the VM's spec.blockDeviceRefs and with an
// older attachment of the same device (being deleted or not: it holds the device until
// detached); the VM has room for v1alpha2.VMBlockDeviceLimit devices, spec first, then
// the attachments in order. Deckhouse judges the same way.
func JudgeAttachments(vm *v1alpha2.VirtualMachine, list []v1alpha2.VirtualMachineBlockDeviceAttachment) map[string]Verdict {
	out := map[string]Verdict{}
	inSpec := map[string]bool{}
	count := 0
	if vm != nil {
		for _, r := range vm.Spec.BlockDeviceRefs {
			inSpec[string(r.Kind)+"/"+r.Name] = true
		}
		count = len(vm.Spec.BlockDeviceRefs)
	}
	seen := map[string]string{}
	for _, a := range list {
		ref := a.Spec.BlockDeviceRef
		key := string(ref.Kind) + "/" + ref.Name
		v := Verdict{Capacity: true}
		switch {
		case inSpec[key]:
			v.Conflict = fmt.Sprintf("%s %q is already attached to the virtual machine: it is in its spec.blockDeviceRefs", ref.Kind, ref.Name)
		case seen[key] != "":
			v.Conflict = fmt.Sprintf("Another VirtualMachineBlockDeviceAttachment %s/%s already exists with the same block device %q for hot-plugging.", a.Namespace, seen[key], ref.Name)
		case count >= v1alpha2.VMBlockDeviceLimit:
			v.Capacity = false
			v.Message = fmt.Sprintf("Cannot attach %d block devices to VirtualMachine %q: the maximum is %d.", count+1, a.Spec.VirtualMachineName, v1alpha2.VMBlockDeviceLimit)
		default:
			v.Admitted = true
			count++
			seen[key] = a.Name
		}
		if v.Conflict != "" {
			v.Message = v.Conflict
		}
		out[a.Name] = v
	}
	return out
}

// AttachmentFile is an attachment's block device as the VM gets it.
type AttachmentFile struct {
	Path     string
	Format   string // raw or qcow2
	ReadOnly bool
	// Size is what the guest sees (status.blockDeviceRefs[].size).
	Size string
	// Disk is the VirtualDisk, for a disk (nil for an image).
	Disk *v1alpha2.VirtualDisk
}

// Problem says why an attachment's block device cannot be attached now. Final problems
// (the device is another VM's, refused, of a kind Ferry does not attach) fail the
// attachment; others leave it waiting (the device is not ready yet).
type Problem struct {
	Message string
	Final   bool
}

func waiting(format string, args ...any) *Problem {
	return &Problem{Message: fmt.Sprintf(format, args...)}
}

func final(format string, args ...any) *Problem {
	return &Problem{Message: fmt.Sprintf(format, args...), Final: true}
}

// ResolveAttachment finds the file of an attachment's block device the way the VM's own
// disks are found (diskFile, imageFile: derived from the object's identity, never from its
// status), or the problem that keeps it from being attached; err is for failed reads. A
// VirtualDisk held by another VM than vm is a problem; one held by no VM is not (the
// attachment controller takes it).
func ResolveAttachment(ctx context.Context, c client.Reader, root, vm string, a *v1alpha2.VirtualMachineBlockDeviceAttachment) (*AttachmentFile, *Problem, error) {
	ref := a.Spec.BlockDeviceRef
	switch ref.Kind {
	case v1alpha2.VMBDAKindVirtualDisk:
		var d v1alpha2.VirtualDisk
		if err := c.Get(ctx, client.ObjectKey{Namespace: a.Namespace, Name: ref.Name}, &d); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, waiting("VirtualDisk %q not found.", ref.Name), nil
			}
			return nil, nil, err
		}
		if !d.DeletionTimestamp.IsZero() {
			return nil, waiting("VirtualDisk %q is being deleted. Delete VirtualMachineBlockDeviceAttachment to detach disk from the VirtualMachine.", ref.Name), nil
		}
		if d.Status.Phase != v1alpha2.ImageReady {
			return nil, waiting("VirtualDisk %q is not ready to be attached to the virtual machine: it is %s%s", ref.Name, phaseOr(d.Status.Phase), readyMessage(d.Status.Conditions)), nil
		}
		file, why := diskFile(root, &d)
		if why != "" {
			return nil, final("%s", why), nil
		}
		if holder := diskHolder(&d); holder != "" && holder != vm {
			return nil, final("VirtualDisk %q is attached to VM %s; a disk serves one VM at a time", ref.Name, holder), nil
		}
		return &AttachmentFile{Path: file.Path, Format: file.Format, Size: d.Status.Capacity, Disk: &d}, nil, nil
	case v1alpha2.VMBDAKindClusterVirtualImage, v1alpha2.VMBDAKindVirtualImage:
		var img interface {
			client.Object
			ImageState() *v1alpha2.ImageStatus
		}
		key := client.ObjectKey{Name: ref.Name}
		if ref.Kind == v1alpha2.VMBDAKindVirtualImage {
			// A VM attaches the VirtualImages of its own namespace only.
			img, key.Namespace = &v1alpha2.VirtualImage{}, a.Namespace
		} else {
			img = &v1alpha2.ClusterVirtualImage{}
		}
		if err := c.Get(ctx, key, img); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, waiting("%s %q not found.", ref.Kind, ref.Name), nil
			}
			return nil, nil, err
		}
		st := img.ImageState()
		if !img.GetDeletionTimestamp().IsZero() {
			return nil, waiting("%s %q is being deleted. Delete VirtualMachineBlockDeviceAttachment to detach image from the VirtualMachine.", ref.Kind, ref.Name), nil
		}
		if st.Phase != v1alpha2.ImageReady {
			return nil, waiting("%s %q is not ready to be attached to the virtual machine: it is %s%s", ref.Kind, ref.Name, phaseOr(st.Phase), readyMessage(st.Conditions)), nil
		}
		file, why := imageFile(root, img, st)
		if why != "" {
			return nil, final("%s", why), nil
		}
		// An image is attached read-only; an ISO too, as a read-only virtio disk (a
		// hot-plugged device is no CD-ROM drive), read as raw.
		format, _, _ := strings.Cut(file.Format, ":")
		return &AttachmentFile{Path: file.Path, Format: format, ReadOnly: true, Size: st.Size.Unpacked}, nil, nil
	}
	return nil, final("unknown block device kind %q", ref.Kind), nil
}

// hotplugDisk is an attachment the VM is to have, without its slot yet.
type hotplugDisk struct {
	attachment string
	file       *AttachmentFile
}

func (h hotplugDisk) device(slot int) v1alpha2.HotplugDevice {
	return v1alpha2.HotplugDevice{Slot: slot, Name: h.attachment, Path: h.file.Path, Format: h.file.Format, ReadOnly: h.file.ReadOnly}
}

// syncHotplug decides the VM's hot-plugged disks (s.hotplug) and asks its running launcher
// pod for them. It also finds what status.blockDeviceRefs shows (s.blockDevices).
func (r *Reconciler) syncHotplug(ctx context.Context, s *scope) error {
	vm := s.vm
	list, err := AttachmentsOf(ctx, r.Client, vm.Namespace, vm.Name)
	if err != nil {
		return err
	}
	verdicts := JudgeAttachments(vm, list)
	s.hotplug = s.hotplug[:0]
	files := map[string]*AttachmentFile{}
	for i := range list {
		a := &list[i]
		if !verdicts[a.Name].Admitted {
			continue
		}
		f, problem, err := ResolveAttachment(ctx, r.Client, r.Node.StorageDir, vm.Name, a)
		if err != nil {
			return err
		}
		if problem != nil {
			continue
		}
		files[a.Name] = f
		if !a.DeletionTimestamp.IsZero() {
			continue // to be detached
		}
		if f.Disk != nil && diskHolder(f.Disk) != vm.Name {
			continue // the attachment controller takes the disk's hold first
		}
		s.hotplug = append(s.hotplug, hotplugDisk{attachment: a.Name, file: f})
	}
	if p := s.active; p != nil && p.DeletionTimestamp.IsZero() && !launcherpod.Ended(p) && len(s.targets) == 0 && !migrationOpen(vm) && knowsHotplug(p) {
		want := assignSlots(s.hotplug, p)
		if cur := hotplugAsked(p); !slices.Equal(cur, want) {
			if err := r.askHotplug(ctx, p, want); err != nil {
				return err
			}
		}
	}
	s.blockDevices = r.blockDeviceRefs(ctx, s, list, files)
	s.blockDevicesKnown = true
	return nil
}

// knowsHotplug tells whether the pod's disks are known: it was asked for some (a pod of the
// VM controller's own), its node agent has reported what its launcher has, or it started
// with none (a migration target that took over, started with its source's disks, is asked
// for nothing before its agent's first report).
func knowsHotplug(p *corev1.Pod) bool {
	_, asked := p.Annotations[v1alpha2.AnnotationHotplug]
	_, reported := p.Annotations[v1alpha2.AnnotationHotplugStatus]
	return asked || reported || len(p.Spec.Containers) == 0 || len(launcherpod.HotplugDisksOf(p.Spec.Containers[0].Args)) == 0
}

// hotplugAsked is the set of disks the pod's VM was asked to have: the annotation, or, on a
// pod the migration controller made (a promoted target, which has none), the disks its
// launcher started with. Asking that pod again for what it has was a write in every
// migration.
func hotplugAsked(p *corev1.Pod) []v1alpha2.HotplugDevice {
	if cur, ok := launcherpod.HotplugWanted(p); ok {
		return cur
	}
	var started []v1alpha2.HotplugDevice
	if len(p.Spec.Containers) > 0 {
		started = slices.Clone(launcherpod.HotplugDisksOf(p.Spec.Containers[0].Args))
	}
	slices.SortFunc(started, func(a, b v1alpha2.HotplugDevice) int { return a.Slot - b.Slot })
	return started
}

// askHotplug writes the disks the pod's VM is to have in its annotation.
func (r *Reconciler) askHotplug(ctx context.Context, p *corev1.Pod, want []v1alpha2.HotplugDevice) error {
	if want == nil {
		want = []v1alpha2.HotplugDevice{}
	}
	b, _ := json.Marshal(want)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{v1alpha2.AnnotationHotplug: string(b)}}})
	if err := r.Client.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return client.IgnoreNotFound(err)
	}
	return nil
}

// assignSlots gives each disk its PCI slot on the pod: the one the pod has it at already
// (asked for; reported by its launcher; started with, as a migration target is), else the
// highest slot no device of the pod holds (one being detached still does).
func assignSlots(disks []hotplugDisk, p *corev1.Pod) []v1alpha2.HotplugDevice {
	cur, _ := launcherpod.HotplugWanted(p)
	var known []v1alpha2.HotplugDevice
	known = append(known, cur...)
	used := map[int]bool{}
	for _, s := range launcherpod.HotplugReported(p) {
		if s.State != v1alpha2.HotplugFailed {
			known = append(known, s.HotplugDevice)
			used[s.Slot] = true
		}
	}
	if len(p.Spec.Containers) > 0 {
		for _, d := range launcherpod.HotplugDisksOf(p.Spec.Containers[0].Args) {
			known = append(known, d)
			if _, reported := p.Annotations[v1alpha2.AnnotationHotplugStatus]; !reported {
				used[d.Slot] = true
			}
		}
	}
	slotOf := func(h hotplugDisk) (int, bool) {
		for _, k := range known {
			if k == h.device(k.Slot) {
				return k.Slot, true
			}
		}
		return 0, false
	}
	var out []v1alpha2.HotplugDevice
	var fresh []hotplugDisk
	for _, h := range disks {
		if slot, ok := slotOf(h); ok && !slices.ContainsFunc(out, func(d v1alpha2.HotplugDevice) bool { return d.Slot == slot }) {
			out = append(out, h.device(slot))
			used[slot] = true
		} else {
			fresh = append(fresh, h)
		}
	}
	for _, h := range fresh {
		for slot := hypervisor.HotplugLastSlot; slot >= hypervisor.HotplugFirstSlot; slot-- {
			if !used[slot] {
				out = append(out, h.device(slot))
				used[slot] = true
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b v1alpha2.HotplugDevice) int { return a.Slot - b.Slot })
	return out
}

// withHotplug starts a new launcher pod with the VM's hot-plugged disks (from the highest
// slot down) and lets its launcher hot-plug disks from the storage; the pod's annotation
// asks for the same disks, so nothing changes once it runs.
func (r *Reconciler) withHotplug(pod *corev1.Pod, s *scope) {
	c := &pod.Spec.Containers[0]
	if r.Node.StorageDir != "" {
		c.Args = append(c.Args, launcherpod.FlagHotplugRoot, r.Node.StorageDir)
	}
	var want []v1alpha2.HotplugDevice
	slot := hypervisor.HotplugLastSlot
	for _, h := range s.hotplug {
		want = append(want, h.device(slot))
		slot--
	}
	slices.SortFunc(want, func(a, b v1alpha2.HotplugDevice) int { return a.Slot - b.Slot })
	c.Args = launcherpod.WithHotplugDisks(c.Args, want)
	if want == nil {
		want = []v1alpha2.HotplugDevice{}
	}
	b, _ := json.Marshal(want)
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[v1alpha2.AnnotationHotplug] = string(b)
}

// blockDeviceRefs is status.blockDeviceRefs: the spec's devices in boot order, attached
// while the VM's QEMU runs, then the hot-plugged ones, attached once its launcher reports
// QEMU has them.
func (r *Reconciler) blockDeviceRefs(ctx context.Context, s *scope, list []v1alpha2.VirtualMachineBlockDeviceAttachment, files map[string]*AttachmentFile) []v1alpha2.BlockDeviceStatusRef {
	vm := s.vm
	p := s.active
	running := p != nil && p.Status.Phase == corev1.PodRunning && !launcherpod.Ended(p)
	var out []v1alpha2.BlockDeviceStatusRef
	for i, ref := range vm.Spec.BlockDeviceRefs {
		out = append(out, v1alpha2.BlockDeviceStatusRef{
			Kind: string(ref.Kind), Name: ref.Name, Size: r.deviceSize(ctx, vm.Namespace, ref),
			Target: "disk" + strconv.Itoa(i), Attached: running && s.disksReady, BootOrder: i + 1,
		})
	}
	var reported []v1alpha2.HotplugDeviceStatus
	if running {
		reported = launcherpod.HotplugReported(p)
	}
	for _, a := range list {
		var rep *v1alpha2.HotplugDeviceStatus
		for i := range reported {
			if reported[i].Name == a.Name {
				rep = &reported[i]
			}
		}
		f := files[a.Name]
		if f == nil || (rep == nil && !a.DeletionTimestamp.IsZero()) {
			continue // not admitted, or detached
		}
		ref := v1alpha2.BlockDeviceStatusRef{Kind: string(a.Spec.BlockDeviceRef.Kind), Name: a.Spec.BlockDeviceRef.Name, Size: f.Size,
			Hotplugged: true, VirtualMachineBlockDeviceAttachmentName: a.Name}
		if rep != nil {
			ref.Target = rep.Target
			ref.Attached = rep.State == v1alpha2.HotplugAttached || rep.State == v1alpha2.HotplugDetaching
		}
		out = append(out, ref)
	}
	return out
}

// deviceSize is what the guest sees of one of the VM's own devices ("" if unknown).
func (r *Reconciler) deviceSize(ctx context.Context, ns string, ref v1alpha2.BlockDeviceRef) string {
	switch ref.Kind {
	case v1alpha2.DiskDevice:
		var d v1alpha2.VirtualDisk
		if r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, &d) == nil {
			return d.Status.Capacity
		}
	case v1alpha2.ClusterImageDevice:
		var img v1alpha2.ClusterVirtualImage
		if r.Client.Get(ctx, client.ObjectKey{Name: ref.Name}, &img) == nil {
			return img.Status.Size.Unpacked
		}
	}
	return ""
}

// vmsOfAttachedDisk wakes the VMs of the attachments that name a disk (the attachment
// controller took its hold, or it became Ready).
func (r *Reconciler) vmsOfAttachedDisk(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha2.VirtualMachineBlockDeviceAttachmentList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, a := range list.Items {
		if a.Spec.BlockDeviceRef.Kind == v1alpha2.VMBDAKindVirtualDisk && a.Spec.BlockDeviceRef.Name == obj.GetName() {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.VirtualMachineName}})
		}
	}
	return out
}

// vmsOfAttachment wakes the VM an attachment names.
func (r *Reconciler) vmsOfAttachment(_ context.Context, obj client.Object) []reconcile.Request {
	a := obj.(*v1alpha2.VirtualMachineBlockDeviceAttachment)
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.VirtualMachineName}}}
}

// checkAttachments refuses, as Deckhouse does, a VM whose spec.blockDeviceRefs gains a
// block device that one of its attachments (not being deleted) hot-plugs: the device would
// be the VM's twice. done is false when the request may go on to the other checks.
func (w *Webhook) checkAttachments(ctx context.Context, req admission.Request, vm *v1alpha2.VirtualMachine) (admission.Response, bool) {
	added := vm.Spec.BlockDeviceRefs
	if req.Operation == admissionv1.Update {
		old := &v1alpha2.VirtualMachine{}
		if err := w.Decoder.DecodeRaw(req.OldObject, old); err != nil {
			return admission.Errored(http.StatusBadRequest, err), true
		}
		added = slices.DeleteFunc(slices.Clone(added), func(r v1alpha2.BlockDeviceRef) bool { return slices.Contains(old.Spec.BlockDeviceRefs, r) })
	}
	if len(added) == 0 || w.APIReader == nil {
		return admission.Response{}, false
	}
	var list v1alpha2.VirtualMachineBlockDeviceAttachmentList
	if err := w.APIReader.List(ctx, &list, client.InNamespace(vm.Namespace)); err != nil {
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("listing block device attachments: %w", err)), true
	}
	for _, a := range list.Items {
		if a.Spec.VirtualMachineName != vm.Name || !a.DeletionTimestamp.IsZero() {
			continue
		}
		for _, r := range added {
			if string(r.Kind) == string(a.Spec.BlockDeviceRef.Kind) && r.Name == a.Spec.BlockDeviceRef.Name {
				return admission.Denied(fmt.Sprintf("spec.blockDeviceRefs: block device %s %q is already attached to the virtual machine via VirtualMachineBlockDeviceAttachment %q; delete the attachment first",
					r.Kind, r.Name, a.Name)), true
			}
		}
	}
	return admission.Response{}, false
}
