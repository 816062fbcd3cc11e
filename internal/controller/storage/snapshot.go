package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	"github.com/ferryvm/ferry/internal/controller/uninstall"
)

// SnapshotReconciler takes VirtualDiskSnapshots: a standalone qcow2 copy of the disk's
// file (with whatever image the disk is an overlay of), kept under the storage's
// snapshots/ (SnapshotPath).
type SnapshotReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Root     string
	// APIReader reads, past the cache, whether Ferry is being uninstalled; nil: never.
	APIReader client.Reader
}

// SetupWithManager registers the controller.
func (r *SnapshotReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualDiskSnapshot{}).
		// A snapshot waits for its disk (Ready, resized), and a deleted one for the disks
		// being made from it.
		Watches(&v1alpha2.VirtualDisk{}, handler.EnqueueRequestsFromMapFunc(r.snapshotsOfDisk)).
		// A snapshot of a running VM's disk waits for the VM to stop.
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(r.waitingSnapshots)).
		Named("virtualdisksnapshot").
		Complete(r)
}

// snapshotScope is what one reconcile of a snapshot observed of its disk.
type snapshotScope struct {
	disk *v1alpha2.VirtualDisk
	// wait is why the disk cannot be copied now (reason, message); empty: it can.
	waitReason, waitMsg string
	// vm is the VM that holds the disk and is not Stopped (it may write to the disk).
	vm string
}

// Reconcile takes one snapshot.
func (r *SnapshotReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s := &v1alpha2.VirtualDiskSnapshot{}
	if err := r.Client.Get(ctx, req.NamespacedName, s); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	path := SnapshotPath(r.Root, s)
	if !s.DeletionTimestamp.IsZero() {
		return r.remove(ctx, s, path)
	}
	if controllerutil.AddFinalizer(s, v1alpha2.FinalizerStorage) {
		if err := r.Client.Update(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	switch {
	case s.Status.Phase == v1alpha2.SnapshotReady && fileExists(path):
		return ctrl.Result{}, nil
	case s.Status.Phase == v1alpha2.SnapshotReady:
		orig := s.DeepCopy()
		r.fail(s, v1alpha2.ReasonSnapshotLost, "the snapshot's file is gone from the storage: delete the snapshot and take another")
		return r.writeStatus(ctx, s, orig, ctrl.Result{})
	case s.Status.Phase == v1alpha2.SnapshotFailed && s.Status.ObservedGeneration == s.Generation:
		return ctrl.Result{}, nil
	}
	sc, err := r.observe(ctx, s)
	if err != nil {
		return ctrl.Result{}, err
	}
	orig := s.DeepCopy()
	if sc.waitReason != "" {
		r.pending(s, sc)
		// The watches wake the snapshot; the period covers a VM's phase change the disk's
		// status does not show.
		return r.writeStatus(ctx, s, orig, ctrl.Result{RequeueAfter: 30 * time.Second})
	}
	return r.take(ctx, s, orig, sc, path)
}

// observe reads the snapshot's disk and the VM that may write to it.
func (r *SnapshotReconciler) observe(ctx context.Context, s *v1alpha2.VirtualDiskSnapshot) (snapshotScope, error) {
	var sc snapshotScope
	name := s.Spec.VirtualDiskName
	d := &v1alpha2.VirtualDisk{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: name}, d); err != nil {
		if !apierrors.IsNotFound(err) {
			return sc, err
		}
		sc.waitReason, sc.waitMsg = v1alpha2.ReasonSnapshotWaitingForDisk, fmt.Sprintf("VirtualDisk %s is not found in namespace %s: the snapshot is taken once it exists and is Ready", name, s.Namespace)
		return sc, nil
	}
	sc.disk = d
	if !d.DeletionTimestamp.IsZero() {
		sc.waitReason, sc.waitMsg = v1alpha2.ReasonSnapshotWaitingForDisk, fmt.Sprintf("VirtualDisk %s is being deleted", name)
		return sc, nil
	}
	if d.Status.Phase != v1alpha2.ImageReady {
		sc.waitReason, sc.waitMsg = v1alpha2.ReasonSnapshotWaitingForDisk, fmt.Sprintf("waiting for VirtualDisk %s to be Ready (it is %s: %s)", name, phaseOr(d.Status.Phase), readyMessage(d.Status.Conditions, "not provisioned yet"))
		return sc, nil
	}
	if c := meta.FindStatusCondition(d.Status.Conditions, v1alpha2.DiskConditionResizing); c != nil && c.Status == metav1.ConditionTrue {
		sc.waitReason, sc.waitMsg = v1alpha2.ReasonSnapshotWaitingForDisk, fmt.Sprintf("VirtualDisk %s is being resized (%s): the snapshot is taken once the resize ends", name, c.Message)
		return sc, nil
	}
	if vm := diskHolder(d); vm != "" {
		running, err := vmRuns(ctx, r.Client, s.Namespace, vm)
		if err != nil {
			return sc, err
		}
		if running {
			sc.vm = vm
		}
	}
	if sc.vm != "" && s.Spec.RequiredConsistency {
		sc.waitReason = v1alpha2.ReasonSnapshotPotentiallyInconsistent
		sc.waitMsg = fmt.Sprintf("VirtualDisk %s is used by VM %s, which is not Stopped, and requiredConsistency is true: "+
			"Ferry cannot yet freeze a running guest's filesystems through qemu-guest-agent, so a copy now might be inconsistent. "+
			"The snapshot is taken by itself once the VM is Stopped; or delete this snapshot and create one with spec.requiredConsistency: false "+
			"to copy the disk while the VM runs (status.consistent false)", name, sc.vm)
	}
	return sc, nil
}

func (r *SnapshotReconciler) pending(s *v1alpha2.VirtualDiskSnapshot, sc snapshotScope) {
	if c := meta.FindStatusCondition(s.Status.Conditions, v1alpha2.SnapshotConditionReady); c == nil || c.Reason != sc.waitReason {
		r.Recorder.Event(s, corev1.EventTypeNormal, sc.waitReason, sc.waitMsg)
	}
	s.Status.Phase = v1alpha2.SnapshotPending
	s.Status.Consistent = nil
	diskReason, diskMsg := v1alpha2.ReasonSnapshotDiskNotReady, sc.waitMsg
	diskOK := sc.waitReason == v1alpha2.ReasonSnapshotPotentiallyInconsistent
	if diskOK {
		diskReason, diskMsg = v1alpha2.ReasonSnapshotDiskReady, "VirtualDisk "+s.Spec.VirtualDiskName+" is Ready"
	}
	setSnapshotCondition(s, v1alpha2.SnapshotConditionDiskReady, diskOK, diskReason, diskMsg)
	setSnapshotCondition(s, v1alpha2.SnapshotConditionReady, false, sc.waitReason, sc.waitMsg)
}

func (r *SnapshotReconciler) fail(s *v1alpha2.VirtualDiskSnapshot, reason, msg string) {
	s.Status.Phase = v1alpha2.SnapshotFailed
	s.Status.ObservedGeneration = s.Generation
	setSnapshotCondition(s, v1alpha2.SnapshotConditionReady, false, reason, msg)
	r.Recorder.Event(s, corev1.EventTypeWarning, reason, msg)
}

// take copies the disk into the snapshot's file. InProgress is written first, with the
// snapshot's resourceVersion, so that two reconciles never copy at once.
func (r *SnapshotReconciler) take(ctx context.Context, s, orig *v1alpha2.VirtualDiskSnapshot, sc snapshotScope, path string) (ctrl.Result, error) {
	consistent := sc.vm == ""
	how := "no running VM uses the disk"
	if !consistent {
		how = fmt.Sprintf("copied while VM %s runs (requiredConsistency false): the copy may hold half-written data, as after a power cut", sc.vm)
	}
	s.Status.Phase = v1alpha2.SnapshotInProgress
	s.Status.Consistent = nil
	setSnapshotCondition(s, v1alpha2.SnapshotConditionDiskReady, true, v1alpha2.ReasonSnapshotDiskReady, "VirtualDisk "+sc.disk.Name+" is Ready")
	setSnapshotCondition(s, v1alpha2.SnapshotConditionReady, false, v1alpha2.ReasonSnapshotting, "copying VirtualDisk "+sc.disk.Name+": "+how)
	if err := r.Client.Status().Patch(ctx, s, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	orig = s.DeepCopy()
	err := copySnapshot(ctx, r.Root, DiskPath(r.Root, sc.disk), path, !consistent)
	var perm permanentError
	switch {
	case errors.As(err, &perm):
		r.fail(s, v1alpha2.ReasonSnapshotFailed, err.Error())
		return r.writeStatus(ctx, s, orig, ctrl.Result{})
	case err != nil:
		// Most likely a QEMU opened the disk meanwhile (qemu-img could not take its
		// lock): the snapshot is looked at again, and waits if the VM runs.
		s.Status.Phase = v1alpha2.SnapshotPending
		setSnapshotCondition(s, v1alpha2.SnapshotConditionReady, false, v1alpha2.ReasonSnapshotWaitingForDisk, fmt.Sprintf("%v; trying again", err))
		return r.writeStatus(ctx, s, orig, ctrl.Result{RequeueAfter: 10 * time.Second})
	}
	size, err := diskSize(ctx, path)
	if err != nil {
		return ctrl.Result{}, err
	}
	s.Status.Phase = v1alpha2.SnapshotReady
	s.Status.Consistent = &consistent
	s.Status.ObservedGeneration = s.Generation
	msg := fmt.Sprintf("snapshot of VirtualDisk %s (%s) taken: %s", sc.disk.Name, humanBytes(size), how)
	setSnapshotCondition(s, v1alpha2.SnapshotConditionReady, true, v1alpha2.ReasonSnapshotReady, msg)
	res, err := r.writeStatus(ctx, s, orig, ctrl.Result{})
	if err == nil && !res.Requeue {
		r.Recorder.Event(s, corev1.EventTypeNormal, v1alpha2.ReasonSnapshotReady, msg)
	}
	return res, err
}

// copySnapshot writes the disk at disk into a standalone qcow2 file at path. A copy taken
// under a running VM (shared) is checked with qemu-img check: a copy it finds damaged
// fails the snapshot.
func copySnapshot(ctx context.Context, root, disk, path string, shared bool) error {
	if err := checkDiskChain(ctx, root, disk); err != nil {
		return permanentError{err}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	defer os.Remove(tmp)
	if err := copyDisk(ctx, disk, tmp, shared); err != nil {
		return err
	}
	if shared {
		if _, err := run(ctx, "qemu-img", "check", "-q", "-f", FormatQcow2, tmp); err != nil {
			return permanent("the copy of the disk taken while its VM ran is damaged (%v): take the snapshot with the VM stopped", err)
		}
	}
	return os.Rename(tmp, path)
}

// remove deletes the snapshot's file once no disk is being made from it. While Ferry is
// being uninstalled it keeps the file.
func (r *SnapshotReconciler) remove(ctx context.Context, s *v1alpha2.VirtualDiskSnapshot, path string) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(s, v1alpha2.FinalizerStorage) {
		return ctrl.Result{}, nil
	}
	if uninstall.Terminating(ctx, r.APIReader, uninstall.CRDSnapshots) {
		ctrl.LoggerFrom(ctx).Info("The VirtualDiskSnapshot CRD is being deleted: releasing the snapshot, its file is kept", "path", path)
		return ctrl.Result{}, uninstall.Release(ctx, r.Client, s)
	}
	restoring, err := r.disksBeingMade(ctx, s)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(restoring) > 0 && snapshotUsable(s) && fileExists(path) {
		// The snapshot stays usable (Ready True) for the disks that read it.
		orig := s.DeepCopy()
		s.Status.Phase = v1alpha2.SnapshotTerminating
		setSnapshotCondition(s, v1alpha2.SnapshotConditionReady, true, v1alpha2.ReasonSnapshotReady,
			"the snapshot is deleted, and its file removed, once no VirtualDisk is being made from it: "+strings.Join(restoring, ", "))
		return r.writeStatus(ctx, s, orig, ctrl.Result{})
	}
	for _, f := range []string{path, path + ".tmp"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return ctrl.Result{}, err
		}
	}
	controllerutil.RemoveFinalizer(s, v1alpha2.FinalizerStorage)
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, s))
}

// disksBeingMade names the disks of the snapshot's namespace made from it that are not
// Ready yet (a Ready disk is a copy: it no longer reads the snapshot's file).
func (r *SnapshotReconciler) disksBeingMade(ctx context.Context, s *v1alpha2.VirtualDiskSnapshot) ([]string, error) {
	var disks v1alpha2.VirtualDiskList
	if err := r.Client.List(ctx, &disks, client.InNamespace(s.Namespace)); err != nil {
		return nil, err
	}
	var out []string
	for _, d := range disks.Items {
		if ref := diskImageRef(&d); ref != nil && ref.Kind == v1alpha2.VirtualDiskSnapshotKind && ref.Name == s.Name &&
			d.Status.Phase != v1alpha2.ImageReady && d.Status.Phase != v1alpha2.ImageFailed && d.DeletionTimestamp.IsZero() {
			out = append(out, d.Name)
		}
	}
	return out, nil
}

// writeStatus writes the snapshot's status, if it changed, against orig with its
// resourceVersion: a reconcile that read a stale snapshot looks again from a fresh read
// (a snapshot found InProgress is copied again). res is the result when the write
// succeeds.
func (r *SnapshotReconciler) writeStatus(ctx context.Context, s, orig *v1alpha2.VirtualDiskSnapshot, res ctrl.Result) (ctrl.Result, error) {
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

func setSnapshotCondition(s *v1alpha2.VirtualDiskSnapshot, typ string, ok bool, reason, msg string) {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: s.Generation})
}

// snapshotsOfDisk wakes the snapshots of a disk, and the snapshot a disk is made from.
func (r *SnapshotReconciler) snapshotsOfDisk(ctx context.Context, obj client.Object) []reconcile.Request {
	d, ok := obj.(*v1alpha2.VirtualDisk)
	if !ok {
		return nil
	}
	var out []reconcile.Request
	if ref := diskImageRef(d); ref != nil && ref.Kind == v1alpha2.VirtualDiskSnapshotKind {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Namespace: d.Namespace, Name: ref.Name}})
	}
	var list v1alpha2.VirtualDiskSnapshotList
	if err := r.Client.List(ctx, &list, client.InNamespace(d.Namespace)); err != nil {
		return out
	}
	for _, s := range list.Items {
		if s.Spec.VirtualDiskName == d.Name {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&s)})
		}
	}
	return out
}

// waitingSnapshots wakes the snapshots of a VM's namespace that are not taken yet.
func (r *SnapshotReconciler) waitingSnapshots(ctx context.Context, obj client.Object) []reconcile.Request {
	var list v1alpha2.VirtualDiskSnapshotList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, s := range list.Items {
		if s.Status.Phase == "" || s.Status.Phase == v1alpha2.SnapshotPending {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&s)})
		}
	}
	return out
}

// snapshotUsable tells whether disks and images can be made from the snapshot: it is
// Ready, or it was Ready and is being deleted, which waits for the disks being made from
// it.
func snapshotUsable(s *v1alpha2.VirtualDiskSnapshot) bool {
	if s.Status.Phase == v1alpha2.SnapshotReady {
		return true
	}
	c := meta.FindStatusCondition(s.Status.Conditions, v1alpha2.SnapshotConditionReady)
	return s.Status.Phase == v1alpha2.SnapshotTerminating && c != nil && c.Status == metav1.ConditionTrue
}

func snapshotPhaseOr(p v1alpha2.VirtualDiskSnapshotPhase) string {
	if p == "" {
		return string(v1alpha2.SnapshotPending)
	}
	return string(p)
}

// snapshotWhy is the snapshot's own account of why it is not Ready, for a disk that waits.
func snapshotWhy(s *v1alpha2.VirtualDiskSnapshot) string {
	if c := meta.FindStatusCondition(s.Status.Conditions, v1alpha2.SnapshotConditionReady); c != nil && c.Message != "" {
		return ": " + c.Message
	}
	return ""
}
