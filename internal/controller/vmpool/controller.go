package vmpool

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Reconciler runs VirtualMachinePools.
type Reconciler struct {
	Client client.Client
	// APIReader lists a pool's replicas and disks past the cache.
	APIReader client.Reader
	Recorder  record.EventRecorder
	// Now is the clock of the free disks' ttl (nil: time.Now).
	Now func() time.Time
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachinePool{}).
		Owns(&v1alpha2.VirtualMachine{}).
		// Retain disks; a replica's own disks belong to it and follow its events.
		Owns(&v1alpha2.VirtualDisk{}).
		Named("vmpool").
		Complete(r)
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// scope is what one reconcile found and did.
type scope struct {
	pool *v1alpha2.VirtualMachinePool
	hash string // of the pool's virtualMachineTemplate
	// vms are the pool's replicas, Terminating ones included, and those made now.
	vms []v1alpha2.VirtualMachine
	// disks are the pool's disks (both reclaim policies) as listed at the start.
	disks []v1alpha2.VirtualDisk
	// surplus is the number of replicas above spec.replicas left in place under Explicit.
	surplus int
	// problem is why a replica could not be made (the apiserver's refusal), for people.
	problem string
	// recheck is when the next free disk's ttl runs out (0: none).
	recheck time.Duration
}

// Reconcile keeps a pool's replicas and disks in line with its spec.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pool := &v1alpha2.VirtualMachinePool{}
	if err := r.Client.Get(ctx, req.NamespacedName, pool); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pool.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // the garbage collector takes the replicas and the pool's disks
	}
	s, err := r.look(ctx, pool)
	if err != nil {
		return ctrl.Result{}, err
	}
	for _, phase := range []func(context.Context, *scope) error{r.scaleUp, r.scaleDown, r.ensureDisks, r.releaseDisks} {
		if err = phase(ctx, s); err != nil {
			break
		}
	}
	if serr := r.writeStatus(ctx, s); err == nil {
		err = serr
	}
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		return ctrl.Result{Requeue: true}, nil // decided on a stale view, or a random name taken: redo
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: s.recheck}, nil
}

// look lists the pool's replicas and disks past the cache.
func (r *Reconciler) look(ctx context.Context, pool *v1alpha2.VirtualMachinePool) (*scope, error) {
	s := &scope{pool: pool, hash: templateHash(pool)}
	sel := client.MatchingLabels{v1alpha2.LabelPoolUID: string(pool.UID)}
	var vms v1alpha2.VirtualMachineList
	if err := r.APIReader.List(ctx, &vms, client.InNamespace(pool.Namespace), sel); err != nil {
		return nil, err
	}
	for _, vm := range vms.Items {
		if isControlledBy(&vm, pool.UID) {
			s.vms = append(s.vms, vm)
		}
	}
	var disks v1alpha2.VirtualDiskList
	if err := r.APIReader.List(ctx, &disks, client.InNamespace(pool.Namespace), sel); err != nil {
		return nil, err
	}
	s.disks = disks.Items
	return s, nil
}
