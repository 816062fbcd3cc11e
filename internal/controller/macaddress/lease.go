package macaddress

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrlrt "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/macaddr"
)

// LeaseReconciler marks each MAC lease Bound, and deletes a lease whose vmmac is gone or
// asks for another address.
type LeaseReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// APIReader confirms past the cache that a lease's vmmac is gone before the lease is
	// deleted (a vmmac just made may not be in the cache yet); nil reads through Client.
	APIReader client.Reader
}

// SetupWithManager registers the controller.
func (r *LeaseReconciler) SetupWithManager(mgr ctrlrt.Manager) error {
	if r.APIReader == nil {
		r.APIReader = r.Client
	}
	return ctrlrt.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineMACAddressLease{}).
		Watches(&v1alpha2.VirtualMachineMACAddress{}, handler.EnqueueRequestsFromMapFunc(r.leasesOfAddress)).
		Named("virtualmachinemacaddresslease").
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(r)
}

// leasesOfAddress: the leases a vmmac holds or asks for.
func (r *LeaseReconciler) leasesOfAddress(ctx context.Context, o client.Object) []reconcile.Request {
	m := o.(*v1alpha2.VirtualMachineMACAddress)
	seen := map[string]bool{}
	for _, a := range []string{m.Status.Address, m.Spec.Address} {
		if a != "" {
			seen[macaddr.LeaseName(a)] = true
		}
	}
	var list v1alpha2.VirtualMachineMACAddressLeaseList
	if m.UID != "" && r.Client.List(ctx, &list, client.MatchingLabels{v1alpha2.LabelVirtualMachineMACAddressUID: string(m.UID)}) == nil {
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

// Reconcile sets one lease's phase, or deletes it when no vmmac holds it.
func (r *LeaseReconciler) Reconcile(ctx context.Context, req ctrlrt.Request) (ctrlrt.Result, error) {
	l := &v1alpha2.VirtualMachineMACAddressLease{}
	if err := r.Client.Get(ctx, req.NamespacedName, l); err != nil {
		return ctrlrt.Result{}, client.IgnoreNotFound(err)
	}
	holder, err := r.holder(ctx, l)
	if err != nil {
		return ctrlrt.Result{}, err
	}
	if holder == nil {
		rv := l.ResourceVersion
		err := r.Client.Delete(ctx, l, client.Preconditions{ResourceVersion: &rv})
		if apierrors.IsConflict(err) {
			return ctrlrt.Result{Requeue: true}, nil
		}
		if err == nil {
			ctrlrt.LoggerFrom(ctx).Info("Deleted a MAC address lease that no VirtualMachineMACAddress holds", "lease", l.Name)
		}
		return ctrlrt.Result{}, client.IgnoreNotFound(err)
	}
	orig := l.DeepCopy()
	l.Status.Phase = v1alpha2.VirtualMachineMACAddressLeasePhaseBound
	l.Status.ObservedGeneration = l.Generation
	meta.SetStatusCondition(&l.Status.Conditions, metav1.Condition{Type: v1alpha2.MACLeaseConditionBound, Status: metav1.ConditionTrue, Reason: v1alpha2.ReasonMACLeaseBound,
		Message: fmt.Sprintf("Bound to VirtualMachineMACAddress %s/%s.", holder.Namespace, holder.Name), ObservedGeneration: l.Generation})
	if orig.Status.Phase != l.Status.Phase {
		r.Recorder.Eventf(l, corev1.EventTypeNormal, "Bound", "VirtualMachineMACAddressLease is bound to %q.", holder.Namespace+"/"+holder.Name)
	}
	if equality.Semantic.DeepEqual(orig.Status, l.Status) {
		return ctrlrt.Result{}, nil
	}
	err = r.Client.Status().Patch(ctx, l, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	if apierrors.IsConflict(err) {
		return ctrlrt.Result{Requeue: true}, nil
	}
	return ctrlrt.Result{}, client.IgnoreNotFound(err)
}

// holder is the vmmac that holds l: the one its spec names, of the UID it is labelled
// with, that asks for l's address (or has none yet). nil when there is none.
func (r *LeaseReconciler) holder(ctx context.Context, l *v1alpha2.VirtualMachineMACAddressLease) (*v1alpha2.VirtualMachineMACAddress, error) {
	ref := l.Spec.VirtualMachineMACAddressRef
	if ref == nil || ref.Name == "" {
		return nil, nil
	}
	m := &v1alpha2.VirtualMachineMACAddress{}
	var err error
	for _, rd := range []client.Reader{r.Client, r.APIReader} {
		if err = rd.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, m); !apierrors.IsNotFound(err) {
			break
		}
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	addr, _ := macaddr.AddressOf(l.Name)
	want, werr := Wanted(m)
	if !uidOK(l, m) || werr == nil && want != "" && want != addr {
		return nil, nil
	}
	return m, nil
}
