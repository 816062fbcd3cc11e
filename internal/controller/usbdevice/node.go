package usbdevice

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// NamespaceRecheck is how soon a NodeUSBDevice assigned to a namespace that does not
// exist (or is being deleted) is looked at again: Ferry does not watch namespaces.
const NamespaceRecheck = 15 * time.Second

// NodeReconciler makes, keeps and removes the USBDevices of NodeUSBDevices, and writes
// the NodeUSBDevices' status.
type NodeReconciler struct {
	Client client.Client
	// APIReader reads a USBDevice past the cache after a create found it there already;
	// nil reads through Client.
	APIReader client.Reader
}

// SetupWithManager registers the controller.
func (r *NodeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.APIReader == nil {
		r.APIReader = r.Client
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.NodeUSBDevice{}).
		// Every USBDevice wakes the NodeUSBDevice of its name: its own (made, changed,
		// deleted by someone), or one that waits for a USBDevice not Ferry's to go.
		Watches(&v1alpha2.USBDevice{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetName()}}}
		})).
		Named("nodeusbdevice").
		Complete(r)
}

// Reconcile brings one NodeUSBDevice's USBDevice in line with spec.assignedNamespace and
// writes its status.
func (r *NodeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	n := &v1alpha2.NodeUSBDevice{}
	err := r.Client.Get(ctx, req.NamespacedName, n)
	if apierrors.IsNotFound(err) {
		// Gone: so are the USBDevices Ferry made for it (what the garbage collector does
		// where it runs).
		return ctrl.Result{}, r.remove(ctx, req.Name, "", "")
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if !n.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.remove(ctx, n.Name, "", "")
	}
	if err := r.remove(ctx, n.Name, n.UID, n.Spec.AssignedNamespace); err != nil {
		return ctrl.Result{}, err
	}
	var a Assignment
	var res ctrl.Result
	var assignErr error
	if n.Spec.AssignedNamespace != "" {
		a, res, assignErr = r.assign(ctx, n)
	}
	st := NodeStatus(n, a)
	if !equality.Semantic.DeepEqual(n.Status, st) {
		n.Status = st
		if err := r.Client.Status().Update(ctx, n); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{Requeue: true}, nil
			}
			return ctrl.Result{}, client.IgnoreNotFound(errors.Join(assignErr, err))
		}
	}
	return res, assignErr
}

// remove deletes the USBDevices Ferry made for the NodeUSBDevice name that it must not
// have (ToRemove).
func (r *NodeReconciler) remove(ctx context.Context, name string, uid types.UID, assigned string) error {
	var list v1alpha2.USBDeviceList
	if err := r.Client.List(ctx, &list); err != nil {
		return fmt.Errorf("listing USBDevices: %w", err)
	}
	for _, u := range ToRemove(list.Items, name, uid, assigned) {
		if err := r.Client.Delete(ctx, u, client.Preconditions{UID: &u.UID}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("deleting USBDevice %s/%s: %w", u.Namespace, u.Name, err)
		}
		ctrl.LoggerFrom(ctx).Info("Deleted the USBDevice of a NodeUSBDevice", "usbdevice", u.Namespace+"/"+u.Name)
	}
	return nil
}

// assign makes n's USBDevice in its assigned namespace, or says why it cannot.
func (r *NodeReconciler) assign(ctx context.Context, n *v1alpha2.NodeUSBDevice) (Assignment, ctrl.Result, error) {
	ns := n.Spec.AssignedNamespace
	key := client.ObjectKey{Namespace: ns, Name: n.Name}
	u := &v1alpha2.USBDevice{}
	err := r.Client.Get(ctx, key, u)
	if apierrors.IsNotFound(err) {
		u = NewUSBDevice(n)
		err = r.Client.Create(ctx, u)
		switch {
		case err == nil:
			return Assignment{Made: true, Device: u}, ctrl.Result{}, nil
		case apierrors.IsAlreadyExists(err):
			// Made meanwhile, or not in the cache yet: look at the one there.
			u = &v1alpha2.USBDevice{}
			err = r.APIReader.Get(ctx, key, u)
		case namespaceMissing(err):
			return Assignment{Waiting: fmt.Sprintf("Namespace %s does not exist: the USBDevice is made there once it does (or set spec.assignedNamespace to an existing namespace).", ns)},
				ctrl.Result{RequeueAfter: NamespaceRecheck}, nil
		case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
			return Assignment{Waiting: fmt.Sprintf("Namespace %s is being deleted: no USBDevice can be made there.", ns)},
				ctrl.Result{RequeueAfter: NamespaceRecheck}, nil
		default:
			return Assignment{Waiting: fmt.Sprintf("Making USBDevice %s/%s failed: %v", ns, n.Name, err)}, ctrl.Result{}, err
		}
	}
	if err != nil {
		return Assignment{Waiting: fmt.Sprintf("Reading USBDevice %s/%s failed: %v", ns, n.Name, err)}, ctrl.Result{}, err
	}
	switch OwnerOf(u, n.Name, n.UID) {
	case Ours:
		return Assignment{Made: true, Device: u}, ctrl.Result{}, nil
	case Stale:
		// Left by an earlier NodeUSBDevice of this name (remove deleted it from what the
		// cache showed): made again once it is gone (the watch on USBDevices).
		if err := r.Client.Delete(ctx, u, client.Preconditions{UID: &u.UID}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			return Assignment{Waiting: fmt.Sprintf("Deleting USBDevice %s/%s, left by an earlier NodeUSBDevice of this name, failed: %v", ns, n.Name, err)}, ctrl.Result{}, err
		}
		return Assignment{Waiting: fmt.Sprintf("USBDevice %s/%s was left by an earlier NodeUSBDevice of this name: replacing it.", ns, n.Name)}, ctrl.Result{}, nil
	default:
		return Assignment{Waiting: fmt.Sprintf("USBDevice %s/%s exists and is not this NodeUSBDevice's (it has no controller owner reference to it): Ferry does not overwrite it. Delete it, and Ferry makes the device's own in its place.", ns, n.Name)},
			ctrl.Result{}, nil
	}
}

// namespaceMissing tells whether a create failed because its namespace does not exist.
func namespaceMissing(err error) bool {
	var st apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &st) {
		return false
	}
	d := st.Status().Details
	return d != nil && d.Kind == "namespaces"
}
