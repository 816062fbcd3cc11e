package vm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
	"github.com/ferryvm/ferry/internal/ipam"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// Reconciler runs VirtualMachines.
type Reconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	// Ranges are the VM address ranges: a VM's NIC gets the gateway and prefix length
	// of the one that holds its address.
	Ranges ipam.Ranges
	// Network gives VMs a NIC with their address (launchers route it on their node); off,
	// a VM holds an address but has no NIC.
	Network bool
	// LauncherImage is the container image of launcher pods (used on a real cluster).
	LauncherImage string
	// Node is what launcher pods mount from their node.
	Node NodeSide
	// Devices is how launcher pods get the node's devices (privileged when zero).
	Devices Devices
	Now     func() time.Time
	// APIReader reads provisioning Secrets past the cache (only their metadata is
	// watched); nil reads through Client.
	APIReader client.Reader

	// cursor is where the search for a free address goes on from.
	cursorMu sync.Mutex
	cursor   netip.Addr

	// created remembers, per VM UID, the launcher pod this controller created last, until
	// the cache shows it: a reconcile that reads a cache without it must not start a
	// second instance (seen under load in TestFencingAbortedByLateRenewal: two pods).
	created sync.Map // types.UID → createdPod
}

// scope is what one reconcile observed and decided; status.go derives the status from it.
type scope struct {
	vm *v1alpha2.VirtualMachine

	active      *corev1.Pod   // the newest pod that runs or will run the VM
	extraActive []*corev1.Pod // other live pods (leftovers)
	targets     []*corev1.Pod // live pods waiting for the VM to migrate in
	terminating []*corev1.Pod
	ended       []*corev1.Pod

	disks        []attachedDisk
	disksReady   bool
	diskReason   string
	diskMessage  string
	ipReady      bool
	ipReason     string
	ipMessage    string
	macReady     bool // the main interface's VirtualMachineMACAddress is bound to the VM (macaddress.go)
	macReason    string
	macMessage   string
	wantRun      bool
	lastEnd      string // why the VM last stopped by itself
	lastEndCause string
	fencedFrom   string // the node the VM's pod ended on when that node was fenced
	faultNote    string // what the runPolicy does about a guest fault, for the status
	provReady    bool   // no provisioning, or its seed is attached
	provMessage  string // what the seed is, or what to fix
	class        classView
	passthrough  passthroughView // spec.usbDevices and spec.gpus (devices.go)
	requeue      time.Duration
	// handover: the VM's pod ended as migrated and its target is not promoted yet (the
	// migration controller does it on the same end). The status is left as it is
	// meanwhile: derived now it would show the VM without a pod (no resources, disks
	// detached, not Migratable) for the moment until the promotion, and cost two writes.
	handover bool

	// ipNotAssigned: the guest does not show the address it holds (the condition only).
	ipNotAssigned bool

	run running // changes reaching a VM that has a pod (running.go)

	hotplug           []hotplugDisk                   // the attachments' disks the VM is to have (hotplug.go)
	blockDevices      []v1alpha2.BlockDeviceStatusRef // status.blockDeviceRefs
	blockDevicesKnown bool                            // blockDevices was found in this reconcile
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha2.VirtualMachine{}).
		Owns(&corev1.Pod{}).
		Watches(&v1alpha2.VirtualDisk{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfDisk)).
		Watches(&v1alpha2.ClusterVirtualImage{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfImage)).
		Watches(&v1alpha2.VirtualImage{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfImage)).
		Watches(&v1alpha2.VirtualMachineIPAddress{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfAddress)).
		Watches(&v1alpha2.VirtualMachineMACAddress{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfMAC)).
		// A USBDevice made or removed changes what a VM that names it says (devices.go).
		Watches(&v1alpha2.USBDevice{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfUSBDevice)).
		// Hot-plugged disks (hotplug.go): the VM's attachments, and the disks they hold.
		Watches(&v1alpha2.VirtualMachineBlockDeviceAttachment{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfAttachment)).
		Watches(&v1alpha2.VirtualDisk{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfAttachedDisk)).
		// Metadata only: the cache holds no Secret's data; provisioning reads its one Secret.
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfSecret)).
		Watches(&v1alpha2.VirtualMachineClass{}, handler.EnqueueRequestsFromMapFunc(r.vmsOfClass), builder.WithPredicates(classChanged)).
		// A migration's end lets the VM remove its migrated-away source pod.
		Watches(&v1alpha2.VirtualMachineOperation{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.(*v1alpha2.VirtualMachineOperation).Spec.VirtualMachineName}}}
		})).
		Named("virtualmachine").
		// VMs are independent of each other (an address is claimed through the apiserver,
		// the cursor has its own lock): several reconcile at once, so one VM waiting on the
		// apiserver does not hold up the rest.
		WithOptions(controller.Options{MaxConcurrentReconciles: 16}).
		Complete(r)
}

// Reconcile brings one VM toward its spec.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	vm := &v1alpha2.VirtualMachine{}
	if err := r.Client.Get(ctx, req.NamespacedName, vm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !vm.DeletionTimestamp.IsZero() {
		res, err := r.finalize(ctx, vm)
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil // wrote from a stale object: redo
		}
		return res, err
	}
	if controllerutil.AddFinalizer(vm, v1alpha2.FinalizerVM) {
		if err := r.Client.Update(ctx, vm); err != nil {
			return ctrl.Result{}, err
		}
	}

	s := &scope{vm: vm}
	orig := vm.DeepCopy()
	defer func() {
		if s.handover && err == nil {
			// The target's promotion, a pod change, reconciles the VM again.
			return
		}
		// Also when a phase stopped early: the status must not show a VM that should run
		// as Stopped.
		s.wantRun = shouldRun(vm.Spec.RunPolicy, vm.Annotations[v1alpha2.AnnotationPowerState])
		r.deriveStatus(s)
		r.deriveRunningStatus(s)
		// The optimistic lock keeps a reconcile that read a stale VM from overwriting what a
		// newer one recorded (e.g. why the VM stopped); a conflict just retries.
		// Our own writes in this reconcile (the power annotation) moved the version on.
		orig.ResourceVersion = vm.ResourceVersion
		// An unchanged status is not sent: with the lock the patch is never empty, and most
		// reconciles (every change of the VM's pods, operations, disks) change nothing
		// (a migration sent ~30 such writes of its VM, a drain of 25 nodes' VMs ~60 per VM).
		var perr error
		if !equality.Semantic.DeepEqual(orig.Status, vm.Status) {
			perr = r.Client.Status().Patch(ctx, vm, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		}
		switch {
		case perr == nil, apierrors.IsNotFound(perr):
		case apierrors.IsConflict(perr):
			if err == nil {
				res = ctrl.Result{Requeue: true}
			}
			return
		default:
			err = errors.Join(err, perr)
		}
		if err == nil && s.requeue > 0 {
			res = ctrl.Result{RequeueAfter: s.requeue}
		}
	}()

	for _, phase := range []func(context.Context, *scope) error{
		r.observePods,
		r.observeClass,
		r.observePassthrough,
		r.ensureAddress,
		r.ensureMAC,
		r.ensureDisks,
		r.ensureProvisioning,
		r.syncHotplug,
		r.handleEndedPods,
		r.handleGuestFault,
		r.applyPower,
		r.reconcileRunning,
	} {
		if err := phase(ctx, s); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{Requeue: true}, nil // decided on a stale object: redo
			}
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

// finalize releases what the VM held: its pods first (so no QEMU writes the disks any
// more), then its disks and its address.
func (r *Reconciler) finalize(ctx context.Context, vm *v1alpha2.VirtualMachine) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(vm, v1alpha2.FinalizerVM) {
		return ctrl.Result{}, nil
	}
	if uninstall.Terminating(ctx, r.APIReader, uninstall.CRDVirtualMachines) {
		// Ferry is being uninstalled: the VM goes at once; its launcher pods, which it
		// owns, go with it (garbage collection).
		ctrl.LoggerFrom(ctx).Info("The VirtualMachine CRD is being deleted: releasing the VM without clean-up")
		return ctrl.Result{}, uninstall.Release(ctx, r.Client, vm)
	}
	pods, err := r.listPods(ctx, vm)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(pods) > 0 {
		for _, p := range pods {
			if p.DeletionTimestamp.IsZero() {
				if err := r.Client.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
					return ctrl.Result{}, err
				}
			}
		}
		if vm.Status.Phase != v1alpha2.MachineTerminating {
			orig := vm.DeepCopy()
			vm.Status.Phase = v1alpha2.MachineTerminating
			if err := r.Client.Status().Patch(ctx, vm, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
				return ctrl.Result{}, client.IgnoreNotFound(err)
			}
		}
		// Pod deletions wake us up through the Owns watch.
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	}
	if err := r.detachDisks(ctx, vm); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.releaseAddress(ctx, vm); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.releaseMACs(ctx, vm); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.removeSeeds(vm); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.removeEFIVars(vm); err != nil {
		return ctrl.Result{}, err
	}
	controllerutil.RemoveFinalizer(vm, v1alpha2.FinalizerVM)
	if err := r.Client.Update(ctx, vm); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, err
	}
	r.created.Delete(vm.UID)
	r.Recorder.Event(vm, corev1.EventTypeNormal, "Deleted", "Released the VM's pods, disks and address")
	return ctrl.Result{}, nil
}

func (r *Reconciler) listPods(ctx context.Context, vm *v1alpha2.VirtualMachine) ([]*corev1.Pod, error) {
	var list corev1.PodList
	if err := r.Client.List(ctx, &list, client.InNamespace(vm.Namespace), client.MatchingFields{launcherpod.IndexVM: vm.Name}); err != nil {
		return nil, fmt.Errorf("listing launcher pods: %w", err)
	}
	var out []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if ref := metav1.GetControllerOf(p); ref != nil && ref.UID == vm.UID {
			out = append(out, p)
		}
	}
	return out, nil
}
