package vmclass

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
)

// IndexVMsByClass is the VMs' cache index by spec.virtualMachineClassName (registered by
// SetupWithManager; the VM controller finds a class's VMs through it too).
const IndexVMsByClass = "spec.virtualMachineClassName"

// resync is how often a class's free resources (maxAllocatableResources) are looked at
// again when nothing else wakes it: the pods on its nodes are not watched.
const resync = 5 * time.Minute

// Reconciler keeps the classes' status and their finalizer, and installs the class
// generic at Ferry's first start.
type Reconciler struct {
	Client client.Client
	// APIReader lists the pods on a class's nodes (their requests) past the cache, which
	// holds launcher pods only; and reads the install record (generic.go).
	APIReader client.Reader
	// Namespace is Ferry's own, where the record that generic was installed is kept.
	Namespace string
}

// SetupWithManager registers the controller, the index of VMs by class and the
// installation of generic.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha2.VirtualMachine{}, IndexVMsByClass, func(o client.Object) []string {
		return []string{ClassName(o.(*v1alpha2.VirtualMachine))}
	}); err != nil {
		return fmt.Errorf("indexing VMs by class: %w", err)
	}
	if err := mgr.Add(&genericInstaller{client: mgr.GetClient(), reader: r.APIReader, namespace: r.Namespace}); err != nil {
		return err
	}
	allClasses := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list v1alpha2.VirtualMachineClassList
		if err := r.Client.List(ctx, &list); err != nil {
			return nil
		}
		out := make([]reconcile.Request, len(list.Items))
		for i, c := range list.Items {
			out[i] = reconcile.Request{NamespacedName: types.NamespacedName{Name: c.Name}}
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachineClass{}).
		// Nodes come, go, and change labels, schedulability or size; their heartbeats
		// (status every few seconds) change nothing a class shows.
		Watches(&corev1.Node{}, allClasses, builder.WithPredicates(predicate.Funcs{UpdateFunc: nodeChanged})).
		// A VM that goes (or leaves the class) may let a deleted class go. Not on every VM
		// made nor on its status: InUse is refreshed at the resync, and a burst of new VMs
		// does not make its class list every pod once per VM.
		Watches(&v1alpha2.VirtualMachine{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: ClassName(o.(*v1alpha2.VirtualMachine))}}}
		}), builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false },
			UpdateFunc: func(e event.UpdateEvent) bool {
				return ClassName(e.ObjectOld.(*v1alpha2.VirtualMachine)) != ClassName(e.ObjectNew.(*v1alpha2.VirtualMachine)) ||
					!e.ObjectNew.GetDeletionTimestamp().Equal(e.ObjectOld.GetDeletionTimestamp())
			},
		})).
		Named("virtualmachineclass").
		Complete(r)
}

// ClassName is the class a VM names. One stored without (made while the admission
// webhooks did not run, or before the field had a default) is generic's: it keeps the
// class it had, whichever class is the default now.
func ClassName(vm *v1alpha2.VirtualMachine) string {
	if vm.Spec.VirtualMachineClassName == "" {
		return v1alpha2.GenericClassName
	}
	return vm.Spec.VirtualMachineClassName
}

func nodeChanged(e event.UpdateEvent) bool {
	o, n := e.ObjectOld.(*corev1.Node), e.ObjectNew.(*corev1.Node)
	return !equality.Semantic.DeepEqual(o.Labels, n.Labels) || o.Spec.Unschedulable != n.Spec.Unschedulable ||
		!equality.Semantic.DeepEqual(o.Status.Allocatable, n.Status.Allocatable)
}

// Reconcile derives one class's status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	class := &v1alpha2.VirtualMachineClass{}
	if err := r.Client.Get(ctx, req.NamespacedName, class); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	users, err := r.users(ctx, class.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !class.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, class, users)
	}
	// Finalizers by patch: an update would send the whole spec back as Go encodes it
	// (cpu.discovery: {} as {nodeSelector: {}}), which the spec's immutability refuses.
	orig := class.DeepCopy()
	if controllerutil.AddFinalizer(class, v1alpha2.FinalizerVMClass) {
		if err := r.Client.Patch(ctx, class, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			return ctrl.Result{}, err
		}
	}
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes); err != nil {
		return ctrl.Result{}, err
	}
	o := observe(class, nodes.Items)
	o.users = users
	if len(o.available) > 0 {
		if o.free, err = r.freeResources(ctx, o.available); err != nil {
			return ctrl.Result{}, err
		}
	}
	orig = class.DeepCopy()
	deriveStatus(class, o)
	if err := r.Client.Status().Patch(ctx, class, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil // decided on a stale class: redo
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return ctrl.Result{RequeueAfter: resync}, nil
}

// users are the VMs (namespace/name) that name the class.
func (r *Reconciler) users(ctx context.Context, class string) ([]string, error) {
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.MatchingFields{IndexVMsByClass: class}); err != nil {
		return nil, fmt.Errorf("listing the VMs of class %s: %w", class, err)
	}
	var out []string
	for _, vm := range vms.Items {
		if vm.DeletionTimestamp.IsZero() {
			out = append(out, vm.Namespace+"/"+vm.Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// finalize keeps a deleted class while VMs use it (Deckhouse: a class cannot be deleted
// as long as a VM uses it); the VM watch wakes it when the last one goes.
func (r *Reconciler) finalize(ctx context.Context, class *v1alpha2.VirtualMachineClass, users []string) error {
	if uninstall.Terminating(ctx, r.APIReader, uninstall.CRDClasses) {
		// Ferry is being uninstalled: the class goes at once.
		return uninstall.Release(ctx, r.Client, class)
	}
	if len(users) > 0 {
		orig := class.DeepCopy()
		class.Status.Phase = v1alpha2.ClassPhaseTerminating
		setInUse(class, users)
		err := r.Client.Status().Patch(ctx, class, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		if apierrors.IsConflict(err) {
			return nil // a newer class is queued: it is decided again
		}
		return client.IgnoreNotFound(err)
	}
	before := class.DeepCopy()
	if controllerutil.RemoveFinalizer(class, v1alpha2.FinalizerVMClass) {
		if err := r.Client.Patch(ctx, class, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// freeResources is the most CPU and the most memory left on any of nodes: allocatable less
// the requests of the pods that run or will run there.
func (r *Reconciler) freeResources(ctx context.Context, nodes []*corev1.Node) (corev1.ResourceList, error) {
	var pods corev1.PodList
	// Past the cache, which holds launcher pods only: every pod takes room.
	running, _ := fields.ParseSelector("status.phase!=" + string(corev1.PodSucceeded) + ",status.phase!=" + string(corev1.PodFailed))
	if err := r.APIReader.List(ctx, &pods, client.MatchingFieldsSelector{Selector: running}); err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	return maxFree(nodes, pods.Items), nil
}
