package ipaddress

import (
	"context"
	"net/netip"
	"sync"
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
	"github.com/ferryvm/ferry/internal/ipam"
)

// Reconciler binds VirtualMachineIPAddresses to leases and records which VM uses each.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Ranges   ipam.Ranges
	// APIReader reads leases and vmips past the cache, where the cache may lag behind
	// what this controller just wrote; nil reads through Client.
	APIReader client.Reader

	// cursor is where the search for a free address goes on from.
	cursorMu sync.Mutex
	cursor   netip.Addr
}

// scope is what one reconcile of a vmip observed.
type scope struct {
	ip *v1alpha2.VirtualMachineIPAddress

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
		For(&v1alpha2.VirtualMachineIPAddress{}).
		Watches(&v1alpha2.VirtualMachineIPAddressLease{}, handler.EnqueueRequestsFromMapFunc(r.addressesOfLease)).
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(r.addressesOfVM)).
		Named("virtualmachineipaddress").
		// Addresses are claimed through the apiserver (a lease's name is its address) and
		// the cursor has its own lock: several reconcile at once.
		WithOptions(controller.Options{MaxConcurrentReconciles: 8}).
		Complete(r)
}

// addressesOfLease: the vmip a lease names, and those that ask for its address.
func (r *Reconciler) addressesOfLease(ctx context.Context, o client.Object) []reconcile.Request {
	l := o.(*v1alpha2.VirtualMachineIPAddressLease)
	var out []reconcile.Request
	if ref := l.Spec.VirtualMachineIPAddressRef; ref != nil && ref.Name != "" {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}})
	}
	addr, ok := ipam.AddressOf(l.Name)
	if !ok {
		return out
	}
	var waiting v1alpha2.VirtualMachineIPAddressList
	if r.Client.List(ctx, &waiting, client.MatchingFields{IndexStaticIP: addr}) == nil {
		for _, ip := range waiting.Items {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ip.Namespace, Name: ip.Name}})
		}
	}
	return out
}

// addressesOfVM: the vmips a VM names, uses, made, or that record it as their user.
func (r *Reconciler) addressesOfVM(ctx context.Context, o client.Object) []reconcile.Request {
	vm := o.(*v1alpha2.VirtualMachine)
	seen := map[string]bool{}
	add := func(name string) {
		if name != "" {
			seen[name] = true
		}
	}
	add(vm.Spec.VirtualMachineIPAddressName)
	add(vm.Status.VirtualMachineIPAddressName)
	var owned v1alpha2.VirtualMachineIPAddressList
	if vm.UID != "" && r.Client.List(ctx, &owned, client.InNamespace(vm.Namespace), client.MatchingLabels{v1alpha2.LabelVirtualMachineUID: string(vm.UID)}) == nil {
		for _, ip := range owned.Items {
			add(ip.Name)
		}
	}
	var attached v1alpha2.VirtualMachineIPAddressList
	if r.Client.List(ctx, &attached, client.InNamespace(vm.Namespace), client.MatchingFields{IndexAttachedVM: vm.Name}) == nil {
		for _, ip := range attached.Items {
			add(ip.Name)
		}
	}
	var out []reconcile.Request
	for n := range seen {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vm.Namespace, Name: n}})
	}
	return out
}

// Reconcile binds one vmip and records its user.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ip := &v1alpha2.VirtualMachineIPAddress{}
	if err := r.Client.Get(ctx, req.NamespacedName, ip); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ip.DeletionTimestamp.IsZero() && controllerutil.ContainsFinalizer(ip, v1alpha2.FinalizerIPAddress) && uninstall.Terminating(ctx, r.APIReader, uninstall.CRDIPAddresses) {
		// Ferry is being uninstalled: the vmip goes at once.
		return ctrl.Result{}, uninstall.Release(ctx, r.Client, ip)
	}
	s := &scope{ip: ip}
	vm, err := r.user(ctx, ip)
	if err != nil {
		return ctrl.Result{}, err
	}
	s.vm = vm
	if !ip.DeletionTimestamp.IsZero() {
		// Kept while a VM uses the address: its guest may still answer at it.
		if vm == "" && controllerutil.RemoveFinalizer(ip, v1alpha2.FinalizerIPAddress) {
			return ctrl.Result{}, client.IgnoreNotFound(r.Client.Update(ctx, ip))
		}
		return ctrl.Result{}, client.IgnoreNotFound(r.writeStatus(ctx, s, ip.DeepCopy(), true))
	}
	if controllerutil.AddFinalizer(ip, v1alpha2.FinalizerIPAddress) {
		if err := r.Client.Update(ctx, ip); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	orig := ip.DeepCopy()
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
// the Bound condition as it is (a vmip being deleted is not bound again).
func (r *Reconciler) writeStatus(ctx context.Context, s *scope, orig *v1alpha2.VirtualMachineIPAddress, keepBound bool) error {
	ip := s.ip
	st := &ip.Status
	gen := ip.Generation
	set := func(t string, ok bool, reason, msg string) {
		status := metav1.ConditionFalse
		if ok {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	if !keepBound {
		set(v1alpha2.IPAddressConditionBound, s.bound, s.boundReason, s.boundM)
	}
	wasAttached := st.VirtualMachine
	st.VirtualMachine = s.vm
	if s.vm != "" {
		set(v1alpha2.IPAddressConditionAttached, true, v1alpha2.ReasonIPAddressAttached, "the address is used by VirtualMachine "+s.vm)
	} else {
		set(v1alpha2.IPAddressConditionAttached, false, v1alpha2.ReasonIPAddressVMNotFound, "VirtualMachineIPAddress is not attached to any virtual machine.")
	}
	switch {
	case !IsTrue(st.Conditions, v1alpha2.IPAddressConditionBound):
		st.Phase = v1alpha2.VirtualMachineIPAddressPhasePending
	case s.vm == "":
		st.Phase = v1alpha2.VirtualMachineIPAddressPhaseBound
	default:
		st.Phase = v1alpha2.VirtualMachineIPAddressPhaseAttached
	}
	st.ObservedGeneration = gen
	if wasAttached != s.vm {
		if s.vm != "" {
			r.Recorder.Eventf(ip, corev1.EventTypeNormal, "Attached", "VirtualMachineIPAddress is attached to %q.", ip.Namespace+"/"+s.vm)
		} else {
			r.Recorder.Eventf(ip, corev1.EventTypeNormal, "Detached", "VirtualMachineIPAddress is no longer used by %q.", ip.Namespace+"/"+wasAttached)
		}
	}
	if equality.Semantic.DeepEqual(orig.Status, ip.Status) {
		return nil
	}
	return r.Client.Status().Patch(ctx, ip, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}
