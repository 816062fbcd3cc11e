package vmsnapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
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
)

// Reconciler takes VM snapshots.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// APIReader reads a Secret found in the way past the cache (Secrets are not cached).
	APIReader client.Reader
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineSnapshot{}).
		Owns(&v1alpha2.VirtualDiskSnapshot{}).
		// A snapshot waits for its VM (to exist, to stop) and for the VM's disks.
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(r.waiting)).
		Watches(&v1alpha2.VirtualDisk{}, handler.EnqueueRequestsFromMapFunc(r.waiting)).
		Named("virtualmachinesnapshot").
		Complete(r)
}

// scope is what one reconcile observed of the VM before the snapshot is taken.
type scope struct {
	vm    *v1alpha2.VirtualMachine
	disks []*v1alpha2.VirtualDisk
	// waitReason, waitMsg: why the snapshot cannot be taken now; empty: it can.
	waitReason, waitMsg string
	// vmOK: the VirtualMachineReady condition (the VM and its disks can be snapshotted).
	vmOK bool
}

// Reconcile moves one VM snapshot forward.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s := &v1alpha2.VirtualMachineSnapshot{}
	if err := r.Client.Get(ctx, req.NamespacedName, s); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	orig := s.DeepCopy()
	if !s.DeletionTimestamp.IsZero() {
		// The disk snapshots and the Secret are owned by the snapshot: the garbage
		// collector removes them.
		s.Status.Phase = v1alpha2.VMSnapshotTerminating
		return r.writeStatus(ctx, s, orig, ctrl.Result{})
	}
	if s.Status.Phase == v1alpha2.VMSnapshotFailed && s.Status.ObservedGeneration == s.Generation {
		return ctrl.Result{}, nil
	}
	if s.Status.VirtualMachineSnapshotSecretName != "" {
		// The configuration is recorded: follow the disk snapshots.
		if err := r.follow(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
		return r.writeStatus(ctx, s, orig, ctrl.Result{})
	}
	sc, err := r.observe(ctx, s)
	if err != nil {
		return ctrl.Result{}, err
	}
	if sc.waitReason != "" {
		r.pending(s, sc)
		// The watches wake the snapshot; the period covers what they miss.
		return r.writeStatus(ctx, s, orig, ctrl.Result{RequeueAfter: 30 * time.Second})
	}
	var conflict inTheWay
	if err := r.take(ctx, s, sc); errors.As(err, &conflict) {
		r.fail(s, v1alpha2.ReasonVMSnapshotFailed, conflict.Error())
	} else if err != nil {
		return ctrl.Result{}, err
	}
	return r.writeStatus(ctx, s, orig, ctrl.Result{})
}

// observe reads the VM and its disks and says whether they can be snapshotted now.
func (r *Reconciler) observe(ctx context.Context, s *v1alpha2.VirtualMachineSnapshot) (scope, error) {
	var sc scope
	vm := &v1alpha2.VirtualMachine{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Spec.VirtualMachineName}, vm); err != nil {
		if !apierrors.IsNotFound(err) {
			return sc, err
		}
		sc.waitReason, sc.waitMsg = v1alpha2.ReasonVMSnapshotWaitingForVM,
			fmt.Sprintf("VirtualMachine %s is not found in namespace %s: the snapshot is taken once it exists", s.Spec.VirtualMachineName, s.Namespace)
		return sc, nil
	}
	sc.vm = vm
	if !vm.DeletionTimestamp.IsZero() {
		sc.waitReason, sc.waitMsg = v1alpha2.ReasonVMSnapshotWaitingForVM, fmt.Sprintf("VirtualMachine %s is being deleted", vm.Name)
		return sc, nil
	}
	var notReady []string
	for _, ref := range vm.Spec.BlockDeviceRefs {
		if ref.Kind != v1alpha2.DiskDevice {
			continue
		}
		d := &v1alpha2.VirtualDisk{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: ref.Name}, d)
		switch {
		case apierrors.IsNotFound(err):
			notReady = append(notReady, ref.Name+" is not found")
			continue
		case err != nil:
			return sc, err
		}
		if c := meta.FindStatusCondition(d.Status.Conditions, v1alpha2.DiskConditionResizing); c != nil && c.Status == metav1.ConditionTrue {
			notReady = append(notReady, ref.Name+" is being resized")
		} else if d.Status.Phase != v1alpha2.ImageReady {
			notReady = append(notReady, fmt.Sprintf("%s is %s", ref.Name, phaseOr(string(d.Status.Phase))))
		}
		sc.disks = append(sc.disks, d)
	}
	if len(notReady) > 0 {
		sc.waitReason = v1alpha2.ReasonVMSnapshotBlockDevicesNotReady
		sc.waitMsg = fmt.Sprintf("waiting for the disks of VirtualMachine %s to be Ready: %s", vm.Name, strings.Join(notReady, "; "))
		return sc, nil
	}
	sc.vmOK = true
	if vm.Status.Phase != v1alpha2.MachineStopped && s.Spec.RequiredConsistency {
		sc.waitReason = v1alpha2.ReasonVMSnapshotPotentiallyInconsistent
		sc.waitMsg = fmt.Sprintf("VirtualMachine %s is %s, not Stopped, and requiredConsistency is true: "+
			"Ferry cannot yet freeze a running guest's filesystems through qemu-guest-agent, so copying its disks now might be inconsistent. "+
			"The snapshot is taken by itself once the VM is Stopped; or delete this snapshot and create one with spec.requiredConsistency: false "+
			"to copy the disks while the VM runs (status.consistent false)", vm.Name, phaseOr(string(vm.Status.Phase)))
	}
	return sc, nil
}

func (r *Reconciler) pending(s *v1alpha2.VirtualMachineSnapshot, sc scope) {
	if c := meta.FindStatusCondition(s.Status.Conditions, v1alpha2.VMSnapshotConditionReady); c == nil || c.Reason != sc.waitReason {
		r.Recorder.Event(s, corev1.EventTypeNormal, sc.waitReason, sc.waitMsg)
	}
	s.Status.Phase = v1alpha2.VMSnapshotPending
	vmReason, vmMsg := v1alpha2.ReasonVMSnapshotVMNotReady, sc.waitMsg
	if sc.vmOK {
		vmReason, vmMsg = v1alpha2.ReasonVMSnapshotVMReady, "VirtualMachine "+sc.vm.Name+" and its disks are Ready"
	}
	setCondition(s, v1alpha2.VMSnapshotConditionVMReady, sc.vmOK, vmReason, vmMsg)
	setCondition(s, v1alpha2.VMSnapshotConditionReady, false, sc.waitReason, sc.waitMsg)
}

// take records the VM's configuration in the snapshot's Secret and asks for a snapshot of
// each disk, in one step: the disks are copied as close to the recorded configuration as
// can be. Both are owned by the VM snapshot, and taking them again finds them made.
func (r *Reconciler) take(ctx context.Context, s *v1alpha2.VirtualMachineSnapshot, sc scope) error {
	content := Content{VM: SavedVM{Name: sc.vm.Name, UID: sc.vm.UID, Spec: sc.vm.Spec}}
	res := []v1alpha2.SnapshotResource{{APIVersion: v1alpha2.GroupVersion.String(), Kind: "VirtualMachine", Name: sc.vm.Name}}
	var names []string
	for _, d := range sc.disks {
		name := DiskSnapshotName(s.Name, d.Name)
		content.Disks = append(content.Disks, SavedDisk{Name: d.Name, Spec: d.Spec, VirtualDiskSnapshotName: name})
		res = append(res, v1alpha2.SnapshotResource{APIVersion: v1alpha2.GroupVersion.String(), Kind: "VirtualDisk", Name: d.Name})
		names = append(names, name)
	}
	if s.Spec.KeepIPAddress == v1alpha2.KeepIPAddressAlways && sc.vm.Status.VirtualMachineIPAddressName != "" {
		content.Address = &SavedAddress{Name: sc.vm.Status.VirtualMachineIPAddressName, Address: sc.vm.Status.IPAddress}
		res = append(res, v1alpha2.SnapshotResource{APIVersion: v1alpha2.GroupVersion.String(), Kind: "VirtualMachineIPAddress", Name: content.Address.Name})
	}
	data, err := content.Encode()
	if err != nil {
		return err
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: SecretName(s.Name)}, Type: corev1.SecretTypeOpaque, Data: data}
	if err := r.create(ctx, s, sec); err != nil {
		return err
	}
	for _, d := range content.Disks {
		ds := &v1alpha2.VirtualDiskSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: d.VirtualDiskSnapshotName},
			Spec: v1alpha2.VirtualDiskSnapshotSpec{VirtualDiskName: d.Name, RequiredConsistency: s.Spec.RequiredConsistency}}
		if err := r.create(ctx, s, ds); err != nil {
			return err
		}
	}
	s.Status.Phase = v1alpha2.VMSnapshotInProgress
	s.Status.VirtualMachineSnapshotSecretName = sec.Name
	s.Status.VirtualDiskSnapshotNames = names
	s.Status.Resources = res
	setCondition(s, v1alpha2.VMSnapshotConditionVMReady, true, v1alpha2.ReasonVMSnapshotVMReady, "VirtualMachine "+sc.vm.Name+" and its disks are Ready")
	msg := fmt.Sprintf("VirtualMachine %s (%s) recorded; snapshotting its disks: %s", sc.vm.Name, phaseOr(string(sc.vm.Status.Phase)), strings.Join(names, ", "))
	setCondition(s, v1alpha2.VMSnapshotConditionReady, false, v1alpha2.ReasonVMSnapshotting, msg)
	r.Recorder.Event(s, corev1.EventTypeNormal, v1alpha2.ReasonVMSnapshotting, msg)
	return nil
}

// create makes obj owned by the snapshot; one already made by it is kept. An object of
// the same name that the snapshot does not own is refused: the snapshot fails rather than
// take it over.
func (r *Reconciler) create(ctx context.Context, s *v1alpha2.VirtualMachineSnapshot, obj client.Object) error {
	if err := controllerutil.SetControllerReference(s, obj, r.Client.Scheme()); err != nil {
		return err
	}
	err := r.Client.Create(ctx, obj)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	found := obj.DeepCopyObject().(client.Object)
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(obj), found); err != nil {
		return err
	}
	if !metav1.IsControlledBy(found, s) {
		kind := "VirtualDiskSnapshot"
		if _, ok := obj.(*corev1.Secret); ok {
			kind = "Secret"
		}
		return inTheWay(fmt.Sprintf("a %s named %s that this snapshot did not make is in the way: delete or rename it, or name the snapshot otherwise", kind, obj.GetName()))
	}
	return nil
}

// inTheWay is an object of the name the snapshot needs that it does not own.
type inTheWay string

func (e inTheWay) Error() string { return string(e) }

// follow derives the snapshot's phase from its disk snapshots.
func (r *Reconciler) follow(ctx context.Context, s *v1alpha2.VirtualMachineSnapshot) error {
	consistent := true
	var waiting []string
	for _, name := range s.Status.VirtualDiskSnapshotNames {
		ds := &v1alpha2.VirtualDiskSnapshot{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, ds)
		switch {
		case apierrors.IsNotFound(err):
			r.fail(s, v1alpha2.ReasonVMSnapshotDiskSnapshotLost, fmt.Sprintf("VirtualDiskSnapshot %s is gone: delete this snapshot and take another", name))
			return nil
		case err != nil:
			return err
		case !metav1.IsControlledBy(ds, s):
			r.fail(s, v1alpha2.ReasonVMSnapshotFailed, fmt.Sprintf("a VirtualDiskSnapshot named %s that this snapshot did not make is in the way: delete or rename it, then take the snapshot again", name))
			return nil
		}
		c := meta.FindStatusCondition(ds.Status.Conditions, v1alpha2.SnapshotConditionReady)
		why := ""
		if c != nil {
			why = ": " + c.Message
		}
		switch ds.Status.Phase {
		case v1alpha2.SnapshotReady:
			consistent = consistent && ds.Status.Consistent != nil && *ds.Status.Consistent
		case v1alpha2.SnapshotFailed:
			reason := v1alpha2.ReasonVMSnapshotFailed
			if c != nil && c.Reason == v1alpha2.ReasonSnapshotLost {
				reason = v1alpha2.ReasonVMSnapshotDiskSnapshotLost
			}
			r.fail(s, reason, fmt.Sprintf("VirtualDiskSnapshot %s failed%s", name, why))
			return nil
		default:
			waiting = append(waiting, fmt.Sprintf("%s is %s%s", name, phaseOr(string(ds.Status.Phase)), why))
		}
	}
	if len(waiting) > 0 {
		s.Status.Phase = v1alpha2.VMSnapshotInProgress
		setCondition(s, v1alpha2.VMSnapshotConditionReady, false, v1alpha2.ReasonVMSnapshotting, "waiting for the disk snapshots: "+strings.Join(waiting, "; "))
		return nil
	}
	if s.Status.Phase != v1alpha2.VMSnapshotReady {
		msg := fmt.Sprintf("VirtualMachine %s is snapshotted: %d disk snapshot(s) Ready", s.Spec.VirtualMachineName, len(s.Status.VirtualDiskSnapshotNames))
		r.Recorder.Event(s, corev1.EventTypeNormal, v1alpha2.ReasonVMSnapshotReady, msg)
		setCondition(s, v1alpha2.VMSnapshotConditionReady, true, v1alpha2.ReasonVMSnapshotReady, msg)
	}
	s.Status.Phase = v1alpha2.VMSnapshotReady
	s.Status.Consistent = &consistent
	s.Status.ObservedGeneration = s.Generation
	return nil
}

func (r *Reconciler) fail(s *v1alpha2.VirtualMachineSnapshot, reason, msg string) {
	if s.Status.Phase != v1alpha2.VMSnapshotFailed {
		r.Recorder.Event(s, corev1.EventTypeWarning, reason, msg)
	}
	s.Status.Phase = v1alpha2.VMSnapshotFailed
	s.Status.Consistent = nil
	s.Status.ObservedGeneration = s.Generation
	setCondition(s, v1alpha2.VMSnapshotConditionReady, false, reason, msg)
}

// writeStatus writes the status, if it changed, with the snapshot's resourceVersion: a
// reconcile that read a stale snapshot looks again.
func (r *Reconciler) writeStatus(ctx context.Context, s, orig *v1alpha2.VirtualMachineSnapshot, res ctrl.Result) (ctrl.Result, error) {
	if equality.Semantic.DeepEqual(s.Status, orig.Status) {
		return res, nil
	}
	err := r.Client.Status().Patch(ctx, s, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	switch {
	case apierrors.IsConflict(err):
		return ctrl.Result{Requeue: true}, nil
	case err != nil:
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return res, nil
}

func setCondition(s *v1alpha2.VirtualMachineSnapshot, typ string, ok bool, reason, msg string) {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: s.Generation})
}

// waiting wakes the snapshots of the object's namespace that are not taken yet.
func (r *Reconciler) waiting(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha2.VirtualMachineSnapshotList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, s := range list.Items {
		if s.Status.VirtualMachineSnapshotSecretName == "" {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&s)})
		}
	}
	return out
}

func phaseOr(p string) string {
	if p == "" {
		return "Pending"
	}
	return p
}
