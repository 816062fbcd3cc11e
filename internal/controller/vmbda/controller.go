package vmbda

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
	vmctl "github.com/ferryvm/ferry/internal/controller/vm"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// Reconciler runs VirtualMachineBlockDeviceAttachments.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// StorageDir is the shared storage: block devices' files are found under it.
	StorageDir string
	// APIReader reads Ferry's CRD past the cache (uninstall); nil reads none.
	APIReader client.Reader
}

// SetupWithManager registers the controller. The attachments' index by VM is registered by
// vm.IndexAttachments.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineBlockDeviceAttachment{}).
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.attachmentsOf(ctx, o.GetNamespace(), o.GetName())
		})).
		// The VM's launcher pods: what their node agents report of the disks.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			if vm := o.GetLabels()[v1alpha2.LabelVMName]; vm != "" {
				return r.attachmentsOf(ctx, o.GetNamespace(), vm)
			}
			return nil
		})).
		Watches(&v1alpha2.VirtualDisk{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.naming(ctx, o.GetNamespace(), v1alpha2.VMBDAKindVirtualDisk, o.GetName())
		})).
		Watches(&v1alpha2.ClusterVirtualImage{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.naming(ctx, "", v1alpha2.VMBDAKindClusterVirtualImage, o.GetName())
		})).
		Watches(&v1alpha2.VirtualImage{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			return r.naming(ctx, o.GetNamespace(), v1alpha2.VMBDAKindVirtualImage, o.GetName())
		})).
		Named("vmbda").
		Complete(r)
}

func (r *Reconciler) attachmentsOf(ctx context.Context, ns, vm string) []reconcile.Request {
	list, err := vmctl.AttachmentsOf(ctx, r.Client, ns, vm)
	if err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list))
	for i := range list {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list[i])})
	}
	return out
}

// naming wakes the attachments of a block device (in ns; every namespace when ns is "").
func (r *Reconciler) naming(ctx context.Context, ns string, kind v1alpha2.VMBDAObjectRefKind, name string) []reconcile.Request {
	var list v1alpha2.VirtualMachineBlockDeviceAttachmentList
	if err := r.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if ref := list.Items[i].Spec.BlockDeviceRef; ref.Kind == kind && ref.Name == name {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return out
}

// CRD is the attachments' CustomResourceDefinition.
const CRD = uninstall.CRDAttachments

// Reconcile brings one attachment's status (and its disk's hold) in line with its VM.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	a := &v1alpha2.VirtualMachineBlockDeviceAttachment{}
	if err := r.Client.Get(ctx, req.NamespacedName, a); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var res ctrl.Result
	var err error
	if !a.DeletionTimestamp.IsZero() {
		res, err = r.finalize(ctx, a)
	} else {
		res, err = r.sync(ctx, a)
	}
	if apierrors.IsConflict(err) {
		return ctrl.Result{Requeue: true}, nil // decided on a stale object: redo
	}
	return res, err
}

// view is what one reconcile found of an attachment's VM.
type view struct {
	vm      *v1alpha2.VirtualMachine // nil: no such VM
	list    []v1alpha2.VirtualMachineBlockDeviceAttachment
	verdict vmctl.Verdict
	file    *vmctl.AttachmentFile
	problem *vmctl.Problem
	pod     *corev1.Pod // the VM's active launcher pod, nil if none
}

func (r *Reconciler) look(ctx context.Context, a *v1alpha2.VirtualMachineBlockDeviceAttachment) (*view, error) {
	v := &view{}
	vm := &v1alpha2.VirtualMachine{}
	switch err := r.Client.Get(ctx, client.ObjectKey{Namespace: a.Namespace, Name: a.Spec.VirtualMachineName}, vm); {
	case err == nil:
		v.vm = vm
	case !apierrors.IsNotFound(err):
		return nil, err
	}
	var err error
	if v.list, err = vmctl.AttachmentsOf(ctx, r.Client, a.Namespace, a.Spec.VirtualMachineName); err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(v.list, func(o v1alpha2.VirtualMachineBlockDeviceAttachment) bool { return o.Name == a.Name }) {
		v.list = append(v.list, *a) // the cache has not seen it yet
	}
	v.verdict = vmctl.JudgeAttachments(v.vm, v.list)[a.Name]
	if v.file, v.problem, err = vmctl.ResolveAttachment(ctx, r.Client, r.StorageDir, a.Spec.VirtualMachineName, a); err != nil {
		return nil, err
	}
	if v.vm != nil {
		for _, p := range v.vm.Status.VirtualMachinePods {
			if !p.Active {
				continue
			}
			pod := &corev1.Pod{}
			if err := r.Client.Get(ctx, client.ObjectKey{Namespace: a.Namespace, Name: p.Name}, pod); err == nil {
				v.pod = pod
			} else if !apierrors.IsNotFound(err) {
				return nil, err
			}
		}
	}
	return v, nil
}

// sync shows the attachment's state and takes its disk's hold for the VM.
func (r *Reconciler) sync(ctx context.Context, a *v1alpha2.VirtualMachineBlockDeviceAttachment) (ctrl.Result, error) {
	if controllerutil.AddFinalizer(a, v1alpha2.FinalizerVMBDA) {
		if err := r.Client.Update(ctx, a); err != nil {
			return ctrl.Result{}, err
		}
	}
	v, err := r.look(ctx, a)
	if err != nil {
		return ctrl.Result{}, err
	}
	vmName := a.Spec.VirtualMachineName
	// The disk's hold: taken for an existing VM once the attachment is admitted, given up
	// when the VM is gone.
	if f := v.file; f != nil && f.Disk != nil {
		switch holder := holderOf(f.Disk); {
		case v.vm != nil && v.verdict.Admitted && holder == "":
			if err := r.hold(ctx, f.Disk, vmName); err != nil {
				return ctrl.Result{}, err
			}
			r.Recorder.Eventf(a, corev1.EventTypeNormal, "DiskHeld", "VirtualDisk %s is held for VM %s", f.Disk.Name, vmName)
		case v.vm == nil && holder == vmName:
			if err := r.release(ctx, a, nil, f.Disk); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	orig := a.DeepCopy()
	phase := derive(a, v)
	if phase == v1alpha2.BlockDeviceAttachmentAttached && orig.Status.Phase != phase {
		r.Recorder.Eventf(a, corev1.EventTypeNormal, "Attached", "%s %s is attached to VM %s", a.Spec.BlockDeviceRef.Kind, a.Spec.BlockDeviceRef.Name, vmName)
	}
	if err := r.Client.Status().Patch(ctx, a, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return ctrl.Result{}, nil
}

// derive sets the attachment's phase and conditions from what the VM has.
func derive(a *v1alpha2.VirtualMachineBlockDeviceAttachment, v *view) v1alpha2.BlockDeviceAttachmentPhase {
	st := &a.Status
	gen := a.Generation
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	vmName := a.Spec.VirtualMachineName
	meta.RemoveStatusCondition(&st.Conditions, v1alpha2.VMBDAConditionTerminating)

	switch {
	case v.problem == nil:
		set(v1alpha2.VMBDAConditionBlockDeviceReady, metav1.ConditionTrue, v1alpha2.ReasonBlockDeviceReady, "")
	default:
		set(v1alpha2.VMBDAConditionBlockDeviceReady, metav1.ConditionFalse, v1alpha2.ReasonBlockDeviceNotReady, v.problem.Message)
	}
	vmRuns := false
	switch {
	case v.vm == nil:
		set(v1alpha2.VMBDAConditionVirtualMachineReady, metav1.ConditionFalse, v1alpha2.ReasonVirtualMachineNotReady, fmt.Sprintf("VirtualMachine %q not found.", vmName))
	case v.vm.Status.Phase == v1alpha2.MachineRunning || v.vm.Status.Phase == v1alpha2.MachineMigrating:
		vmRuns = true
		set(v1alpha2.VMBDAConditionVirtualMachineReady, metav1.ConditionTrue, v1alpha2.ReasonVirtualMachineReady, "")
	case v.vm.Status.Phase == v1alpha2.MachineStopped || v.vm.Status.Phase == v1alpha2.MachineStopping ||
		v.vm.Status.Phase == v1alpha2.MachineStarting || v.vm.Status.Phase == v1alpha2.MachinePending || v.vm.Status.Phase == "":
		set(v1alpha2.VMBDAConditionVirtualMachineReady, metav1.ConditionFalse, v1alpha2.ReasonNotAttached,
			fmt.Sprintf("VirtualMachine %q is %s: waiting for the VirtualMachine to be Running; the disk is attached when it starts.", vmName, phaseOf(v.vm)))
	default:
		set(v1alpha2.VMBDAConditionVirtualMachineReady, metav1.ConditionFalse, v1alpha2.ReasonVirtualMachineNotReady,
			fmt.Sprintf("Waiting for the VirtualMachine %q to be Running (it is %s).", vmName, v.vm.Status.Phase))
	}
	if v.verdict.Capacity {
		set(v1alpha2.VMBDAConditionCapacityAvailable, metav1.ConditionTrue, v1alpha2.ReasonCapacityAvailable, "")
	} else {
		set(v1alpha2.VMBDAConditionCapacityAvailable, metav1.ConditionFalse, v1alpha2.ReasonCapacityReached, v.verdict.Message)
	}

	attached := func(phase v1alpha2.BlockDeviceAttachmentPhase, status metav1.ConditionStatus, reason, msg string) v1alpha2.BlockDeviceAttachmentPhase {
		set(v1alpha2.VMBDAConditionAttached, status, reason, msg)
		st.Phase = phase
		st.ObservedGeneration = gen
		return phase
	}
	switch {
	case v.verdict.Conflict != "":
		return attached(v1alpha2.BlockDeviceAttachmentFailed, metav1.ConditionFalse, v1alpha2.ReasonConflict, v.verdict.Conflict)
	case v.problem != nil && v.problem.Final:
		return attached(v1alpha2.BlockDeviceAttachmentFailed, metav1.ConditionFalse, v1alpha2.ReasonNotAttached, v.problem.Message)
	case v.problem != nil:
		return attached(v1alpha2.BlockDeviceAttachmentPending, metav1.ConditionFalse, v1alpha2.ReasonNotAttached, "Waiting for block device to be ready: "+v.problem.Message)
	case !v.verdict.Capacity:
		return attached(v1alpha2.BlockDeviceAttachmentPending, metav1.ConditionFalse, v1alpha2.ReasonNotAttached, "Virtual machine block device capacity reached.")
	case v.vm == nil:
		return attached(v1alpha2.BlockDeviceAttachmentPending, metav1.ConditionFalse, v1alpha2.ReasonNotAttached, fmt.Sprintf("VirtualMachine %q not found.", vmName))
	case v.file.Disk != nil && holderOf(v.file.Disk) != vmName:
		return attached(v1alpha2.BlockDeviceAttachmentPending, metav1.ConditionFalse, v1alpha2.ReasonNotAttached, fmt.Sprintf("Taking VirtualDisk %q for VM %s.", a.Spec.BlockDeviceRef.Name, vmName))
	case !vmRuns || v.pod == nil || v.pod.Status.Phase != corev1.PodRunning:
		return attached(v1alpha2.BlockDeviceAttachmentPending, metav1.ConditionFalse, v1alpha2.ReasonNotAttached,
			fmt.Sprintf("VirtualMachine %q is %s: the disk is attached when it runs.", vmName, phaseOf(v.vm)))
	}
	var rep *v1alpha2.HotplugDeviceStatus
	for _, s := range launcherpod.HotplugReported(v.pod) {
		if s.Name == a.Name && s.Path == v.file.Path {
			rep = &s
		}
	}
	switch {
	case rep != nil && rep.State == v1alpha2.HotplugAttached:
		st.VirtualMachineName = vmName
		return attached(v1alpha2.BlockDeviceAttachmentAttached, metav1.ConditionTrue, v1alpha2.ReasonAttached,
			fmt.Sprintf("QEMU has the disk as %s (PCI slot %#x) in VM %s.", rep.Target, rep.Slot, vmName))
	case rep != nil && rep.State == v1alpha2.HotplugFailed:
		return attached(v1alpha2.BlockDeviceAttachmentFailed, metav1.ConditionFalse, v1alpha2.ReasonNotAttached,
			"QEMU did not attach the disk: "+rep.Error+"; delete the attachment and create it again to retry")
	case v.vm.Status.Phase == v1alpha2.MachineMigrating:
		return attached(v1alpha2.BlockDeviceAttachmentInProgress, metav1.ConditionFalse, v1alpha2.ReasonAttachmentRequestSent,
			"The VM is migrating: the disk is attached once the migration has ended.")
	}
	return attached(v1alpha2.BlockDeviceAttachmentInProgress, metav1.ConditionFalse, v1alpha2.ReasonAttachmentRequestSent,
		"Attachment request has been sent: attachment is in progress.")
}

func phaseOf(vm *v1alpha2.VirtualMachine) string {
	if vm == nil || vm.Status.Phase == "" {
		return string(v1alpha2.MachinePending)
	}
	return string(vm.Status.Phase)
}

func holderOf(d *v1alpha2.VirtualDisk) string {
	if len(d.Status.AttachedToVirtualMachines) == 0 {
		return ""
	}
	return d.Status.AttachedToVirtualMachines[0].Name
}

// hold makes vm the disk's holder, as the VM controller does for its own disks: the
// optimistic lock makes two VMs racing for one disk see a conflict.
func (r *Reconciler) hold(ctx context.Context, d *v1alpha2.VirtualDisk, vm string) error {
	orig := d.DeepCopy()
	d.Status.AttachedToVirtualMachines = []v1alpha2.AttachedVirtualMachine{{Name: vm}}
	if err := r.Client.Status().Patch(ctx, d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("holding VirtualDisk %s for VM %s: %w", d.Name, vm, err)
	}
	return nil
}

// release gives up the VM's hold on the attachment's disk, unless the VM (vm; nil when it
// is gone) has the disk in its spec or another attachment of it names the disk.
func (r *Reconciler) release(ctx context.Context, a *v1alpha2.VirtualMachineBlockDeviceAttachment, vm *v1alpha2.VirtualMachine, d *v1alpha2.VirtualDisk) error {
	vmName := a.Spec.VirtualMachineName
	if holderOf(d) != vmName {
		return nil
	}
	if vm != nil && slices.ContainsFunc(vm.Spec.BlockDeviceRefs, func(ref v1alpha2.BlockDeviceRef) bool {
		return ref.Kind == v1alpha2.DiskDevice && ref.Name == d.Name
	}) {
		return nil
	}
	others, err := vmctl.AttachmentsOf(ctx, r.Client, a.Namespace, vmName)
	if err != nil {
		return err
	}
	for _, o := range others {
		// One being deleted still holds the disk until its own detach is done (it releases
		// the disk itself then): a conflicting attachment finalized later, after the one
		// that has the disk was deleted, released the disk before its detach.
		holds := o.DeletionTimestamp.IsZero() || controllerutil.ContainsFinalizer(&o, v1alpha2.FinalizerVMBDA)
		if o.Name != a.Name && holds && o.Spec.BlockDeviceRef.Kind == v1alpha2.VMBDAKindVirtualDisk && o.Spec.BlockDeviceRef.Name == d.Name {
			return nil
		}
	}
	orig := d.DeepCopy()
	d.Status.AttachedToVirtualMachines = slices.DeleteFunc(d.Status.AttachedToVirtualMachines, func(h v1alpha2.AttachedVirtualMachine) bool { return h.Name == vmName })
	if err := r.Client.Status().Patch(ctx, d, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("releasing VirtualDisk %s: %w", d.Name, err)
	}
	r.Recorder.Eventf(a, corev1.EventTypeNormal, "DiskReleased", "VirtualDisk %s is no longer held for VM %s", d.Name, vmName)
	return nil
}

// finalize waits until no live pod of the VM has the disk (asked for, reported, or started
// with it), then releases the disk and the attachment.
func (r *Reconciler) finalize(ctx context.Context, a *v1alpha2.VirtualMachineBlockDeviceAttachment) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(a, v1alpha2.FinalizerVMBDA) {
		return ctrl.Result{}, nil
	}
	if uninstall.Terminating(ctx, r.APIReader, CRD) {
		ctrl.LoggerFrom(ctx).Info("The VirtualMachineBlockDeviceAttachment CRD is being deleted: releasing the attachment without clean-up")
		return ctrl.Result{}, uninstall.Release(ctx, r.Client, a)
	}
	orig := a.DeepCopy()
	a.Status.Phase = v1alpha2.BlockDeviceAttachmentTerminating
	pod, err := r.podWithDisk(ctx, a)
	if err != nil {
		return ctrl.Result{}, err
	}
	if pod != "" {
		meta.SetStatusCondition(&a.Status.Conditions, metav1.Condition{Type: v1alpha2.VMBDAConditionTerminating, Status: metav1.ConditionTrue,
			Reason: v1alpha2.ReasonDetachPending, ObservedGeneration: a.Generation,
			Message: fmt.Sprintf("Waiting for the disk to be detached from VM %s (launcher pod %s).", a.Spec.VirtualMachineName, pod)})
		if err := r.Client.Status().Patch(ctx, a, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		// The pod's annotations wake this up; the timer backs that up.
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	}
	if a.Spec.BlockDeviceRef.Kind == v1alpha2.VMBDAKindVirtualDisk {
		d := &v1alpha2.VirtualDisk{}
		switch err := r.Client.Get(ctx, client.ObjectKey{Namespace: a.Namespace, Name: a.Spec.BlockDeviceRef.Name}, d); {
		case err == nil:
			vm := &v1alpha2.VirtualMachine{}
			if err := r.Client.Get(ctx, client.ObjectKey{Namespace: a.Namespace, Name: a.Spec.VirtualMachineName}, vm); apierrors.IsNotFound(err) {
				vm = nil
			} else if err != nil {
				return ctrl.Result{}, err
			}
			if err := r.release(ctx, a, vm, d); err != nil {
				return ctrl.Result{}, err
			}
		case !apierrors.IsNotFound(err):
			return ctrl.Result{}, err
		}
	}
	controllerutil.RemoveFinalizer(a, v1alpha2.FinalizerVMBDA)
	if err := r.Client.Update(ctx, a); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	r.Recorder.Eventf(a, corev1.EventTypeNormal, "Detached", "%s %s is detached from VM %s", a.Spec.BlockDeviceRef.Kind, a.Spec.BlockDeviceRef.Name, a.Spec.VirtualMachineName)
	return ctrl.Result{}, nil
}

// podWithDisk names a live launcher pod of the attachment's VM that still has the disk, or
// may get it: its node agent reports it (not failed), the VM controller asks for it, or the
// pod started with it and has reported nothing yet. "" when none.
func (r *Reconciler) podWithDisk(ctx context.Context, a *v1alpha2.VirtualMachineBlockDeviceAttachment) (string, error) {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(a.Namespace), client.MatchingFields{launcherpod.IndexVM: a.Spec.VirtualMachineName}); err != nil {
		return "", fmt.Errorf("listing launcher pods: %w", err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if launcherpod.Ended(p) || (!p.DeletionTimestamp.IsZero() && p.Status.Phase != corev1.PodRunning) {
			continue
		}
		for _, s := range launcherpod.HotplugReported(p) {
			if s.Name == a.Name && s.State != v1alpha2.HotplugFailed {
				return p.Name, nil
			}
		}
		if want, ok := launcherpod.HotplugWanted(p); ok && slices.ContainsFunc(want, func(d v1alpha2.HotplugDevice) bool { return d.Name == a.Name }) {
			return p.Name, nil
		}
		if _, reported := p.Annotations[v1alpha2.AnnotationHotplugStatus]; !reported && len(p.Spec.Containers) > 0 &&
			slices.ContainsFunc(launcherpod.HotplugDisksOf(p.Spec.Containers[0].Args), func(d v1alpha2.HotplugDevice) bool { return d.Name == a.Name }) {
			return p.Name, nil
		}
	}
	return "", nil
}
