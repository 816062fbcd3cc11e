package macaddress

import (
	"context"
	"fmt"
	"io"
	"sort"
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
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
	"github.com/ferryvm/ferry/internal/macaddr"
)

// Reconciler binds VirtualMachineMACAddresses to leases and records which VM uses each.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// APIReader reads leases past the cache, where the cache may lag behind what this
	// controller just wrote; nil reads through Client.
	APIReader client.Reader
	// Prefix is the cluster's prefix of allocated addresses; Rand gives their last three
	// octets.
	Prefix macaddr.Prefix
	Rand   io.Reader
}

// scope is what one reconcile of a vmmac observed.
type scope struct {
	mac *v1alpha2.VirtualMachineMACAddress

	bound               bool
	boundReason, boundM string
	vm                  string // the VM that uses it
	requeue             time.Duration
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = r.Client
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineMACAddress{}).
		Watches(&v1alpha2.VirtualMachineMACAddressLease{}, handler.EnqueueRequestsFromMapFunc(r.addressesOfLease)).
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(r.addressesOfVM)).
		Named("virtualmachinemacaddress").
		// Addresses are claimed through the apiserver (a lease's name is its address).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

// addressesOfLease: the vmmac a lease names, and those that ask for its address.
func (r *Reconciler) addressesOfLease(ctx context.Context, o client.Object) []reconcile.Request {
	l := o.(*v1alpha2.VirtualMachineMACAddressLease)
	var out []reconcile.Request
	if ref := l.Spec.VirtualMachineMACAddressRef; ref != nil && ref.Name != "" {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}})
	}
	var waiting v1alpha2.VirtualMachineMACAddressList
	if r.Client.List(ctx, &waiting, client.MatchingFields{IndexAddress: l.Name}) == nil {
		for _, m := range waiting.Items {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: m.Namespace, Name: m.Name}})
		}
	}
	return out
}

// addressesOfVM: the vmmacs a VM names, records, made, or that record it as their user.
func (r *Reconciler) addressesOfVM(ctx context.Context, o client.Object) []reconcile.Request {
	vm := o.(*v1alpha2.VirtualMachine)
	seen := map[string]bool{}
	if n := vm.MainMACAddressName(); n != "" {
		seen[n] = true
	}
	if st := vm.MainNetworkStatus(); st != nil && st.VirtualMachineMACAddressName != "" {
		seen[st.VirtualMachineMACAddressName] = true
	}
	var list v1alpha2.VirtualMachineMACAddressList
	if vm.UID != "" && r.Client.List(ctx, &list, client.InNamespace(vm.Namespace), client.MatchingLabels{v1alpha2.LabelVirtualMachineUID: string(vm.UID)}) == nil {
		for _, m := range list.Items {
			seen[m.Name] = true
		}
	}
	if r.Client.List(ctx, &list, client.InNamespace(vm.Namespace), client.MatchingFields{IndexAttachedVM: vm.Name}) == nil {
		for _, m := range list.Items {
			seen[m.Name] = true
		}
	}
	var out []reconcile.Request
	for n := range seen {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vm.Namespace, Name: n}})
	}
	return out
}

// Reconcile binds one vmmac and records its user; a vmmac being deleted that no VM uses
// gives its lease up.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	mac := &v1alpha2.VirtualMachineMACAddress{}
	if err := r.Client.Get(ctx, req.NamespacedName, mac); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !mac.DeletionTimestamp.IsZero() && controllerutil.ContainsFinalizer(mac, v1alpha2.FinalizerMACAddress) && uninstall.Terminating(ctx, r.APIReader, uninstall.CRDMACAddresses) {
		// Ferry is being uninstalled: the vmmac goes at once; its leases go with
		// their own CRD, which may be gone already.
		return ctrl.Result{}, uninstall.Release(ctx, r.Client, mac)
	}
	vm, err := r.user(ctx, mac)
	if err != nil {
		return ctrl.Result{}, err
	}
	s := &scope{mac: mac, vm: vm}
	if !mac.DeletionTimestamp.IsZero() {
		// Kept while a VM uses the address: its NIC may still have it.
		if vm == "" && controllerutil.ContainsFinalizer(mac, v1alpha2.FinalizerMACAddress) {
			if err := r.freeLeases(ctx, mac); err != nil {
				return ctrl.Result{}, err
			}
			controllerutil.RemoveFinalizer(mac, v1alpha2.FinalizerMACAddress)
			return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, mac))
		}
		return ctrl.Result{}, client.IgnoreNotFound(r.writeStatus(ctx, s, mac.DeepCopy(), true))
	}
	if controllerutil.AddFinalizer(mac, v1alpha2.FinalizerMACAddress) {
		if err := r.Client.Update(ctx, mac); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	orig := mac.DeepCopy()
	bindErr := r.bind(ctx, s)
	if err := r.writeStatus(ctx, s, orig, false); err != nil || bindErr != nil {
		if apierrors.IsConflict(err) || apierrors.IsConflict(bindErr) {
			return ctrl.Result{Requeue: true}, nil
		}
		if bindErr != nil {
			return ctrl.Result{}, bindErr
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

// writeStatus derives the conditions and phase from s and patches them; keepBound keeps
// the Bound condition as it is (a vmmac being deleted is not bound again).
func (r *Reconciler) writeStatus(ctx context.Context, s *scope, orig *v1alpha2.VirtualMachineMACAddress, keepBound bool) error {
	mac := s.mac
	st := &mac.Status
	gen := mac.Generation
	set := func(t string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	if !keepBound {
		set(v1alpha2.MACAddressConditionBound, s.bound, s.boundReason, s.boundM)
	}
	was := st.VirtualMachine
	st.VirtualMachine = s.vm
	if s.vm != "" {
		set(v1alpha2.MACAddressConditionAttached, true, v1alpha2.ReasonMACAddressAttached, "the MAC address is used by VirtualMachine "+s.vm)
	} else {
		set(v1alpha2.MACAddressConditionAttached, false, v1alpha2.ReasonMACAddressVMNotFound, "No VirtualMachine uses the MAC address.")
	}
	switch {
	case !meta.IsStatusConditionTrue(st.Conditions, v1alpha2.MACAddressConditionBound):
		st.Phase = v1alpha2.VirtualMachineMACAddressPhasePending
	case s.vm == "":
		st.Phase = v1alpha2.VirtualMachineMACAddressPhaseBound
	default:
		st.Phase = v1alpha2.VirtualMachineMACAddressPhaseAttached
	}
	st.ObservedGeneration = gen
	if was != s.vm {
		if s.vm != "" {
			r.Recorder.Eventf(mac, corev1.EventTypeNormal, "Attached", "VirtualMachineMACAddress is attached to %q.", mac.Namespace+"/"+s.vm)
		} else {
			r.Recorder.Eventf(mac, corev1.EventTypeNormal, "Detached", "VirtualMachineMACAddress is no longer used by %q.", mac.Namespace+"/"+was)
		}
	}
	if equality.Semantic.DeepEqual(orig.Status, mac.Status) {
		return nil
	}
	return r.Client.Status().Patch(ctx, mac, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// user returns the VM that uses mac, or "". The VM recorded as its user keeps it while it
// exists and still asks for it; otherwise the first to ask for it takes it: a VM that
// records it, then the VM that made it, then the oldest VM that names it.
func (r *Reconciler) user(ctx context.Context, mac *v1alpha2.VirtualMachineMACAddress) (string, error) {
	var list v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &list, client.InNamespace(mac.Namespace), client.MatchingFields{IndexVMMACName: mac.Name}); err != nil {
		return "", fmt.Errorf("listing the VMs that name %s: %w", mac.Name, err)
	}
	var cands []*v1alpha2.VirtualMachine
	for i := range list.Items {
		cands = append(cands, &list.Items[i])
	}
	for _, name := range []string{OwnerVM(mac), mac.Status.VirtualMachine} {
		if name == "" || containsVM(cands, name) {
			continue
		}
		var vm v1alpha2.VirtualMachine
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: mac.Namespace, Name: name}, &vm)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return "", err
		}
		cands = append(cands, &vm)
	}
	var wanting []*v1alpha2.VirtualMachine
	for _, vm := range cands {
		if Wants(vm, mac) {
			wanting = append(wanting, vm)
		}
	}
	return Choose(mac, wanting), nil
}

// Choose picks the user of mac among the VMs that ask for it (see user).
func Choose(mac *v1alpha2.VirtualMachineMACAddress, cands []*v1alpha2.VirtualMachine) string {
	if len(cands) == 0 {
		return ""
	}
	if containsVM(cands, mac.Status.VirtualMachine) {
		return mac.Status.VirtualMachine
	}
	rank := func(vm *v1alpha2.VirtualMachine) int {
		switch st := vm.MainNetworkStatus(); {
		case st != nil && st.VirtualMachineMACAddressName == mac.Name:
			return 0
		case OwnerVM(mac) == vm.Name:
			return 1
		}
		return 2
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if rank(a) != rank(b) {
			return rank(a) < rank(b)
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	return cands[0].Name
}

func containsVM(vms []*v1alpha2.VirtualMachine, name string) bool {
	for _, vm := range vms {
		if vm.Name == name {
			return true
		}
	}
	return false
}
