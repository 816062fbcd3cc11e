package usbdevice

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// DeviceReconciler writes the USBDevices' status.
type DeviceReconciler struct {
	Client client.Client
}

// SetupWithManager registers the controller.
func (r *DeviceReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.USBDevice{}).
		// A NodeUSBDevice's Ready is its USBDevice's.
		Watches(&v1alpha2.NodeUSBDevice{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			n := o.(*v1alpha2.NodeUSBDevice)
			if n.Spec.AssignedNamespace == "" {
				return nil
			}
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: n.Spec.AssignedNamespace, Name: n.Name}}}
		})).
		// The VMs that name a USBDevice (both the old and the new VM of an update are mapped).
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			vm := o.(*v1alpha2.VirtualMachine)
			var out []reconcile.Request
			for _, d := range vm.Spec.USBDevices {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: vm.Namespace, Name: d.Name}})
			}
			return out
		})).
		Named("usbdevice").
		Complete(r)
}

// Reconcile writes one USBDevice's status.
func (r *DeviceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	u := &v1alpha2.USBDevice{}
	if err := r.Client.Get(ctx, req.NamespacedName, u); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var owner *v1alpha2.NodeUSBDevice
	if ref := metav1.GetControllerOf(u); ref != nil && ref.Kind == v1alpha2.NodeUSBDeviceKind {
		n := &v1alpha2.NodeUSBDevice{}
		err := r.Client.Get(ctx, client.ObjectKey{Name: ref.Name}, n)
		switch {
		case err == nil && n.UID == ref.UID:
			owner = n
		case err != nil && !apierrors.IsNotFound(err):
			return ctrl.Result{}, err
		}
	}
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.InNamespace(u.Namespace)); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing the VMs of namespace %s: %w", u.Namespace, err)
	}
	st := DeviceStatus(u, owner, VMsNaming(vms.Items, u.Name))
	if equality.Semantic.DeepEqual(u.Status, st) {
		return ctrl.Result{}, nil
	}
	u.Status = st
	if err := r.Client.Status().Update(ctx, u); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return ctrl.Result{}, nil
}
