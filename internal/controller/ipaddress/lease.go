package ipaddress

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// DefaultRetention is how long a released lease stays for its namespace (Deckhouse's 10
// minutes, as its user guide says).
const DefaultRetention = 10 * time.Minute

// LeaseReconciler says whether each lease is Bound or Released, and deletes released
// leases after Retention.
type LeaseReconciler struct {
	Client    client.Client
	Recorder  record.EventRecorder
	Retention time.Duration
	Now       func() time.Time
}

// SetupWithManager registers the controller.
func (r *LeaseReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Retention <= 0 {
		r.Retention = DefaultRetention
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineIPAddressLease{}).
		Watches(&v1alpha2.VirtualMachineIPAddress{}, handler.EnqueueRequestsFromMapFunc(r.leasesOfAddress)).
		Named("virtualmachineipaddresslease").
		// Leases are independent of each other.
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

// leasesOfAddress: the leases a vmip holds or asks for.
func (r *LeaseReconciler) leasesOfAddress(ctx context.Context, o client.Object) []reconcile.Request {
	ip := o.(*v1alpha2.VirtualMachineIPAddress)
	seen := map[string]bool{}
	for _, a := range []string{ip.Status.Address, ip.Spec.StaticIP} {
		if a != "" {
			seen[ipam.LeaseName(a)] = true
		}
	}
	var list v1alpha2.VirtualMachineIPAddressLeaseList
	if ip.UID != "" && r.Client.List(ctx, &list, client.MatchingLabels{v1alpha2.LabelVirtualMachineIPAddressUID: string(ip.UID)}) == nil {
		for _, l := range list.Items {
			seen[l.Name] = true
		}
	}
	var out []reconcile.Request
	for n := range seen {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: n}})
	}
	return out
}

// Reconcile sets one lease's phase, releases it when its vmip is gone, and deletes it
// when it has been released for longer than the retention time.
func (r *LeaseReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	l := &v1alpha2.VirtualMachineIPAddressLease{}
	if err := r.Client.Get(ctx, req.NamespacedName, l); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	holder, err := r.holder(ctx, l)
	if err != nil {
		return ctrl.Result{}, err
	}
	if holder == nil {
		return r.released(ctx, l)
	}
	orig := l.DeepCopy()
	l.Status.Phase = v1alpha2.VirtualMachineIPAddressLeasePhaseBound
	setLeaseCondition(l, true, v1alpha2.ReasonLeaseBound, fmt.Sprintf("Bound to VirtualMachineIPAddress %s/%s.", holder.Namespace, holder.Name))
	if orig.Status.Phase != l.Status.Phase {
		r.Recorder.Eventf(l, corev1.EventTypeNormal, "Bound", "VirtualMachineIPAddressLease is bound to %q.", holder.Namespace+"/"+holder.Name)
	}
	return ctrl.Result{}, r.patchStatus(ctx, orig, l)
}

// holder is the vmip that holds l: the one its spec names, of the UID it is labelled
// with, whose address (once recorded) is l's.
func (r *LeaseReconciler) holder(ctx context.Context, l *v1alpha2.VirtualMachineIPAddressLease) (*v1alpha2.VirtualMachineIPAddress, error) {
	ref := l.Spec.VirtualMachineIPAddressRef
	if ref == nil || ref.Name == "" {
		return nil, nil
	}
	ip := &v1alpha2.VirtualMachineIPAddress{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, ip)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	addr := ipam.LeaseNameToAddress(l.Name)
	if !uidOK(l, ip) || ip.Status.Address != "" && ip.Status.Address != addr {
		return nil, nil
	}
	if ip.Spec.Type == v1alpha2.VirtualMachineIPAddressTypeStatic && ip.Spec.StaticIP != addr && ip.Status.Address != addr {
		return nil, nil
	}
	return ip, nil
}

// released marks l Released (keeping its namespace), and deletes it once it has been so
// for the retention time. A lease of an earlier release waits for its VM while that VM
// exists: the VM's own vmip takes it over.
func (r *LeaseReconciler) released(ctx context.Context, l *v1alpha2.VirtualMachineIPAddressLease) (ctrl.Result, error) {
	if ref := l.Spec.VirtualMachineIPAddressRef; ref != nil && ref.Name != "" || l.Labels[v1alpha2.LabelVirtualMachineIPAddressUID] != "" {
		orig := l.DeepCopy()
		if ref != nil {
			ref.Name = ""
		}
		delete(l.Labels, v1alpha2.LabelVirtualMachineIPAddressUID)
		if err := r.Client.Patch(ctx, l, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{Requeue: true}, nil
			}
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	if uid := l.Labels[v1alpha2.LabelLegacyLeaseHolder]; uid != "" {
		waiting, err := r.vmExists(ctx, uid)
		if err != nil || waiting {
			return ctrl.Result{RequeueAfter: r.Retention}, err
		}
	}
	c := meta.FindStatusCondition(l.Status.Conditions, v1alpha2.LeaseConditionBound)
	if c != nil && c.Reason == v1alpha2.ReasonLeaseReleased {
		if left := r.Retention - r.Now().Sub(c.LastTransitionTime.Time); left > 0 {
			return ctrl.Result{RequeueAfter: left}, nil
		}
		// Not if it was taken since it was read.
		rv := l.ResourceVersion
		err := r.Client.Delete(ctx, l, client.Preconditions{ResourceVersion: &rv})
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		if err == nil {
			ctrl.LoggerFrom(ctx).Info("Deleted a released address lease after its retention time", "lease", l.Name, "retention", r.Retention)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	orig := l.DeepCopy()
	l.Status.Phase = v1alpha2.VirtualMachineIPAddressLeasePhaseReleased
	ns := ""
	if ref := l.Spec.VirtualMachineIPAddressRef; ref != nil {
		ns = ref.Namespace
	}
	msg := "VirtualMachineIPAddressLease is not bound to any VirtualMachineIPAddress."
	if ns != "" {
		msg += fmt.Sprintf(" Until it is deleted (%s after its release), only a VirtualMachineIPAddress of namespace %s may take it.", r.Retention, ns)
	}
	setLeaseCondition(l, false, v1alpha2.ReasonLeaseReleased, msg)
	if orig.Status.Phase != l.Status.Phase {
		r.Recorder.Event(l, corev1.EventTypeNormal, "Released", "VirtualMachineIPAddressLease is released.")
	}
	if err := r.patchStatus(ctx, orig, l); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.Retention}, nil
}

// vmExists tells whether a VM of that UID exists (a lease of an earlier release waits
// for it).
func (r *LeaseReconciler) vmExists(ctx context.Context, uid string) (bool, error) {
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms); err != nil {
		return false, err
	}
	for _, vm := range vms.Items {
		if string(vm.UID) == uid {
			return true, nil
		}
	}
	return false, nil
}

func setLeaseCondition(l *v1alpha2.VirtualMachineIPAddressLease, ok bool, reason, msg string) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&l.Status.Conditions, metav1.Condition{Type: v1alpha2.LeaseConditionBound, Status: status, Reason: reason, Message: msg, ObservedGeneration: l.Generation})
	l.Status.ObservedGeneration = l.Generation
}

func (r *LeaseReconciler) patchStatus(ctx context.Context, orig, l *v1alpha2.VirtualMachineIPAddressLease) error {
	if equality.Semantic.DeepEqual(orig.Status, l.Status) {
		return nil
	}
	err := r.Client.Status().Patch(ctx, l, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsConflict(err) {
		return nil // a newer version is queued
	}
	return client.IgnoreNotFound(err)
}
