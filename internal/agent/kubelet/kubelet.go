package kubelet

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// GuestState is what a launcher reports about its guest. It comes from QEMU (run state,
// faults) and the QEMU guest agent, never from what the guest prints.
type GuestState struct {
	// QEMU is QEMU's run state: running, paused, inmigrate, postmigrate, guest-panicked,
	// io-error, shutdown, ... ("" before the launcher answered).
	QEMU string
	// Fault is QEMU's evidence that the guest cannot run (a panic, an I/O error), or nil.
	Fault *GuestFault
	// Agent is what the QEMU guest agent reports while it answers; nil while it does not.
	Agent *v1alpha2.GuestAgentReport
	// IncomingURI is where a migration target's QEMU listens.
	IncomingURI string
	// Migration is the progress of an outgoing migration.
	Migration *v1alpha2.MigrationProgress
	// BlockDevices are the VM's hot-plugged disks.
	BlockDevices []v1alpha2.HotplugDeviceStatus
}

// GuestFault is evidence that a guest cannot run: Reason is v1alpha2.ReasonGuestPanicked or
// ReasonGuestIOError.
type GuestFault struct {
	Reason, Message string
}

// migrating tells whether a migration is under way in or out of this launcher.
func (g GuestState) migrating() bool {
	return g.IncomingURI != "" || (g.Migration != nil && !g.Migration.Finished())
}

// Probe asks the launcher in runDir about its guest.
type Probe func(ctx context.Context, runDir string) (GuestState, error)

// Role is which parts of the node's work a Kubelet does.
type Role int

const (
	// RoleAll plays the kubelet and handles VMs (`ferry up`: no real kubelet runs).
	RoleAll Role = iota
	// RoleHandler handles the VMs of launcher pods that a real kubelet runs.
	RoleHandler
	// RoleKubelet plays the kubelet alone: it stands in for a real one, beside an agent of
	// RoleHandler, to test that role where no real kubelet runs. Like a real kubelet it
	// knows nothing of guests: a pod is Ready when its readiness gates are True.
	RoleKubelet
)

// ParseRole reads a role's name: all, handler or kubelet.
func ParseRole(s string) (Role, error) {
	switch s {
	case "", "all":
		return RoleAll, nil
	case "handler":
		return RoleHandler, nil
	case "kubelet":
		return RoleKubelet, nil
	}
	return 0, fmt.Errorf("role %q: want all (no real kubelet on the node: ferry up), handler (beside a real kubelet) or kubelet (a stand-in for one, in tests)", s)
}

// PlaysKubelet tells whether the role runs the node's pods; HandlesVMs, whether it
// handles their guests.
func (r Role) PlaysKubelet() bool { return r != RoleHandler }
func (r Role) HandlesVMs() bool   { return r != RoleKubelet }

// Options configure the kubelet role of one node.
type Options struct {
	// Role is which parts this Kubelet plays.
	Role     Role
	NodeName string
	NodeIP   string
	Labels   map[string]string
	CPU      resource.Quantity
	Memory   resource.Quantity
	// StateDir keeps one run directory per pod.
	StateDir string
	// Executable runs containers whose command is "ferry" (`ferry launcher`, of pods made
	// before ferry-launcher); LauncherExecutable those whose command is "ferry-launcher".
	Executable         string
	LauncherExecutable string
	// Runtime starts containers; nil runs them as processes of the executables above.
	Runtime Runtime
	// LauncherEnv is added to the environment of every container (NAME=value).
	LauncherEnv []string
	// LeaseInterval is how often the node Lease is renewed; LeaseDuration is what it claims.
	LeaseInterval  time.Duration
	LeaseDuration  time.Duration
	StatusInterval time.Duration
	// OnLeaseRenewed is called after each successful Lease renewal with the renew time
	// written and how long the renewal took.
	OnLeaseRenewed func(stamp time.Time, took time.Duration)
	Probe          Probe
	// Migrate asks the launcher in runDir to migrate its VM out; CancelMigration stops that.
	Migrate         func(ctx context.Context, runDir string, req v1alpha2.MigrationRequest) error
	CancelMigration func(ctx context.Context, runDir string) error
	// FinalMigration reads what a launcher that migrated away saved about the migration.
	FinalMigration func(runDir string) (*v1alpha2.MigrationProgress, error)
	// Hotplug hands the launcher in runDir the disks its VM is to have hot-plugged.
	Hotplug func(ctx context.Context, runDir string, devs []v1alpha2.HotplugDevice) error
	Log     logr.Logger
}

// DefaultLeaseInterval is how often a node without fencing renews its Lease.
const DefaultLeaseInterval = 2 * time.Second

func (o *Options) defaults() {
	if o.LeaseInterval == 0 {
		o.LeaseInterval = DefaultLeaseInterval
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration = 40 * time.Second
	}
	if o.StatusInterval == 0 {
		o.StatusInterval = 30 * time.Second
	}
	if o.CPU.IsZero() {
		o.CPU = resource.MustParse("4")
	}
	if o.Memory.IsZero() {
		o.Memory = resource.MustParse("16Gi")
	}
}

// Kubelet runs one node's pods.
type Kubelet struct {
	o      Options
	client kubernetes.Interface
	log    logr.Logger
	queue  workqueue.TypedRateLimitingInterface[types.UID]
	pods   cache.Indexer

	// leaseInterval is the current renewal period (fencing may shorten it), in nanoseconds.
	leaseInterval atomic.Int64
	// lease is the node Lease as last written, for a one-request renewal.
	leaseMu sync.Mutex
	lease   *coordinationv1.Lease

	mu    sync.Mutex
	procs map[types.UID]*process
	keys  map[types.UID]string // pod UID → namespace/name, for pods gone from the store
}

// New makes the kubelet role for a node.
func New(c kubernetes.Interface, o Options) *Kubelet {
	o.defaults()
	k := &Kubelet{
		o: o, client: c, log: o.Log,
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.UID]()),
		procs: map[types.UID]*process{},
		keys:  map[types.UID]string{},
	}
	k.leaseInterval.Store(int64(o.LeaseInterval))
	return k
}

// SetLeaseInterval changes how often the node Lease is renewed, from the next renewal on.
func (k *Kubelet) SetLeaseInterval(d time.Duration) {
	if d > 0 {
		k.leaseInterval.Store(int64(d))
	}
}

// LeaseInterval is how often the node Lease is renewed.
func (k *Kubelet) LeaseInterval() time.Duration { return time.Duration(k.leaseInterval.Load()) }

// Run registers the node and runs its pods until ctx ends; then it stops every launcher.
func (k *Kubelet) Run(ctx context.Context) error {
	// A node that boots cut off from the cluster waits for it, as a kubelet does.
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		if k.o.Role.PlaysKubelet() {
			err = k.register(rctx)
		}
		if err == nil {
			_, err = k.renewLease(rctx)
		}
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt%10 == 0 {
			k.log.Error(err, "Could not register the node; retrying")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if k.o.Role.PlaysKubelet() {
		k.log.Info("Registered node", "node", k.o.NodeName, "ip", k.o.NodeIP)
	} else {
		k.log.Info("Handling the VMs of the node's launcher pods", "node", k.o.NodeName, "lease", k.leaseNamespace()+"/"+k.o.NodeName)
	}

	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.o.NodeName).String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	k.pods = inf.GetIndexer()
	enqueue := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok {
			k.mu.Lock()
			k.keys[p.UID] = p.Namespace + "/" + p.Name
			k.mu.Unlock()
			k.queue.Add(p.UID)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	if err := k.pods.AddIndexers(cache.Indexers{"uid": func(obj any) ([]string, error) {
		return []string{string(obj.(*corev1.Pod).UID)}, nil
	}}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}

	var wg sync.WaitGroup
	wg.Go(func() { k.heartbeat(ctx) })
	for range 2 {
		wg.Go(func() {
			for k.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	k.queue.ShutDown()
	if k.o.Role.PlaysKubelet() {
		k.stopAll()
	} else {
		k.forgetAll() // the launchers are the kubelet's: they run on
	}
	wg.Wait()
	return nil
}

func (k *Kubelet) processNext(ctx context.Context) bool {
	uid, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(uid)
	sync := k.sync
	if !k.o.Role.PlaysKubelet() {
		sync = k.handle
	}
	if err := sync(ctx, uid); err != nil {
		// A conflict only means the pod changed meanwhile: retry without noise.
		if ctx.Err() == nil && !apierrors.IsConflict(err) {
			k.log.Error(err, "Could not sync pod", "pod", k.keyOf(uid))
		}
		k.queue.AddRateLimited(uid)
		return true
	}
	k.queue.Forget(uid)
	return true
}

func (k *Kubelet) keyOf(uid types.UID) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[uid]
}

// podByUID returns the pod from the informer's store, or nil once it is gone.
func (k *Kubelet) podByUID(uid types.UID) *corev1.Pod {
	objs, err := k.pods.ByIndex("uid", string(uid))
	if err != nil || len(objs) == 0 {
		return nil
	}
	return objs[0].(*corev1.Pod)
}
