package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/watchdog"
)

// Watchdog fences the node when it is not fed in time.
type Watchdog interface {
	Arm(timeout time.Duration) error
	Feed() error
	Disarm() error
}

// fencer keeps the node's watchdog in step with its NodeGroup: armed with the group's
// timing while fencing is on and no admin disarmed the node, fed after each Lease renewal
// that took at most one lease interval.
type fencer struct {
	c        client.Client
	node     string
	wd       Watchdog
	log      logr.Logger
	interval func(time.Duration) // sets the Lease renewal period
	// defaultInterval is the renewal period without fencing.
	defaultInterval time.Duration

	mu    sync.Mutex
	armed *deckhousev1.Timing // nil: disarmed
	// shown is what the Node's annotations said when last read (the fencing controller
	// relies on them); a Node registered anew has none, whatever was armed.
	shown map[string]string
	// lastRenew and lastFeed are when the Lease was last renewed and the watchdog last fed.
	lastRenew, lastFeed time.Time

	// peers, when set, lets the node keep its VMs through a control-plane outage that
	// most of the cluster sees.
	peers *peers
	// outage is whether the last peer check found one (to log changes only).
	outage bool

	// spec names the watchdog in the Node's condition (device:/dev/watchdog, ...); cond is
	// what that condition should say: the watchdog's kind, or that arming it failed.
	spec string
	cond fencingCondition
	// seen is the Node as last read (nil before it is registered).
	seen *corev1.Node
}

// controlPlaneReachable tells peers whether this node's Lease renewals succeed.
func (f *fencer) controlPlaneReachable() (bool, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	interval := f.defaultInterval
	if f.armed != nil {
		interval = f.armed.LeaseInterval
	}
	return !f.lastRenew.IsZero() && time.Since(f.lastRenew) <= 2*interval, f.lastRenew
}

// desired reads what the watchdog should be: the group's timing, or nil for disarmed.
func (f *fencer) desired(ctx context.Context) (*deckhousev1.Timing, string, error) {
	var node corev1.Node
	if err := f.c.Get(ctx, client.ObjectKey{Name: f.node}, &node); err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	f.shown = node.Annotations
	f.seen = &node
	f.mu.Unlock()
	if why := node.Annotations[v1alpha2.AnnotationFencingDisarmed]; why != "" {
		return nil, "disarmed by annotation: " + why, nil
	}
	name := node.Labels[deckhousev1.LabelNodeGroup]
	if name == "" {
		return nil, "the node is in no NodeGroup", nil
	}
	var g deckhousev1.NodeGroup
	if err := f.c.Get(ctx, client.ObjectKey{Name: name}, &g); err != nil {
		return nil, "", client.IgnoreNotFound(err)
	}
	if !g.FencingEnabled() {
		return nil, "NodeGroup " + name + " has no fencing", nil
	}
	t := g.Spec.Fencing.Timing()
	return &t, "", nil
}

// sync brings the watchdog in step with the node's group, then shows on the Node whether
// the node can be fenced (its condition v1alpha2.NodeConditionFencing).
func (f *fencer) sync(ctx context.Context) error {
	err := f.syncWatchdog(ctx)
	f.mu.Lock()
	node, cond := f.seen, f.cond
	f.mu.Unlock()
	if node == nil {
		return err
	}
	if cerr := showCondition(ctx, f.c, node, cond); cerr != nil && ctx.Err() == nil {
		err = errors.Join(err, fmt.Errorf("showing the fencing condition on the Node: %w", cerr))
	}
	return err
}

// armResult records, for the Node's condition, whether arming the watchdog worked.
func (f *fencer) armResult(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.cond = failedCondition(f.spec, err)
	} else {
		f.cond = watchdogCondition(f.spec, f.wd, "")
	}
}

// syncWatchdog arms, re-arms or disarms the watchdog to match the node's group. The Node's
// annotations never show a shorter timeout than the armed one: a longer timeout is
// published before it is armed, a shorter one after; a first arming that fails takes the
// published timing back, so the fencing controller does not count on a watchdog that
// never ran.
func (f *fencer) syncWatchdog(ctx context.Context) error {
	want, why, err := f.desired(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	have := f.armed
	f.mu.Unlock()
	switch {
	case want == nil && have == nil:
		return f.publish(ctx, nil)
	case want == nil:
		if err := f.wd.Disarm(); err != nil {
			return err
		}
		f.setArmed(nil)
		f.interval(f.defaultInterval)
		f.log.Info("Disarmed the watchdog", "why", why)
		return f.publish(ctx, nil)
	case have != nil && *have == *want:
		return f.publish(ctx, want)
	}
	grows := have == nil || want.Timeout > have.Timeout || want.LeaseInterval > have.LeaseInterval
	if grows {
		if err := f.publish(ctx, want); err != nil {
			return err
		}
	}
	// Renew at the new pace before arming, so the first feed comes in time.
	f.interval(want.LeaseInterval)
	if err := f.wd.Arm(want.Timeout); err != nil {
		f.armResult(err)
		if have == nil {
			f.interval(f.defaultInterval)
			err = errors.Join(err, f.publish(ctx, nil))
		}
		return err
	}
	f.armResult(nil)
	f.setArmed(want)
	f.log.Info("Armed the watchdog", "timing", want.String())
	return f.publish(ctx, want)
}

func (f *fencer) setArmed(t *deckhousev1.Timing) {
	f.mu.Lock()
	f.armed = t
	if t != nil {
		f.lastFeed = time.Now() // arming feeds
	}
	f.mu.Unlock()
}

// publish shows the armed timing on the Node (annotations), or removes it, unless the Node
// shows it already.
func (f *fencer) publish(ctx context.Context, t *deckhousev1.Timing) error {
	timeout, interval := "", f.defaultInterval.String()
	if t != nil {
		timeout, interval = t.Timeout.String(), t.LeaseInterval.String()
	}
	f.mu.Lock()
	shown := f.shown
	f.mu.Unlock()
	if shown[v1alpha2.AnnotationWatchdogTimeout] == timeout && shown[v1alpha2.AnnotationLeaseInterval] == interval {
		return nil
	}
	ann := map[string]any{v1alpha2.AnnotationWatchdogTimeout: nil, v1alpha2.AnnotationLeaseInterval: interval}
	if t != nil {
		ann[v1alpha2.AnnotationWatchdogTimeout] = timeout
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	node := &corev1.Node{}
	node.Name = f.node
	if err := f.c.Patch(ctx, node, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return err
	}
	f.mu.Lock()
	f.shown = node.Annotations
	f.mu.Unlock()
	return nil
}

// renewed feeds the watchdog after a Lease renewal that took at most one lease interval:
// a slower one could let the watchdog fire later than the fencing controller assumes.
func (f *fencer) renewed(_ time.Time, took time.Duration) {
	f.mu.Lock()
	armed := f.armed
	f.lastRenew = time.Now()
	f.mu.Unlock()
	if armed == nil {
		return
	}
	if took > armed.LeaseInterval {
		f.log.Info("Not feeding the watchdog: the Lease renewal was too slow", "took", took, "limit", armed.LeaseInterval)
		return
	}
	err := f.wd.Feed()
	if errors.Is(err, watchdog.ErrNotArmed) {
		// The watchdog restarted (it forgets its state): arm it again.
		f.log.Info("The watchdog was not armed (restarted?): arming it again", "timing", armed.String())
		err = f.wd.Arm(armed.Timeout)
	}
	if err != nil {
		f.log.Error(err, "Could not feed the watchdog")
		return
	}
	f.mu.Lock()
	f.lastFeed = time.Now()
	f.mu.Unlock()
}

// watchOutage runs while the node is armed: when renewals have stopped feeding the
// watchdog for a lease interval, it asks the peers whether the control plane is down for
// most of the cluster, and if so feeds the watchdog itself. A node cut off alone (no peer
// answers, or the peers reach the control plane) is left to its watchdog.
func (f *fencer) watchOutage(ctx context.Context) {
	for {
		f.mu.Lock()
		armed, lastFeed := f.armed, f.lastFeed
		f.mu.Unlock()
		wait := f.defaultInterval
		if armed != nil {
			wait = armed.LeaseInterval
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if armed == nil || time.Since(lastFeed) < armed.LeaseInterval {
			continue
		}
		outage, seen := f.peers.outage(ctx, max(armed.LeaseInterval/2, 300*time.Millisecond))
		f.mu.Lock()
		changed := outage != f.outage
		f.outage = outage
		f.mu.Unlock()
		if changed {
			if outage {
				f.log.Info("The control plane is down for most of the cluster, not just this node: keeping this node's VMs (the watchdog is fed while that lasts)", "seen", seen)
			} else {
				f.log.Info("Lease renewals fail and the control plane is not down for most of the cluster: leaving the node to its watchdog", "seen", seen)
			}
		}
		if outage {
			if err := f.wd.Feed(); err != nil {
				f.log.Error(err, "Could not feed the watchdog")
			}
		}
	}
}

// run keeps the watchdog in step until ctx ends, then disarms it: a node stopped on
// purpose must not be reset. It syncs when changed says the Node or a NodeGroup changed,
// and every resync besides (a missed event, a failed write).
func (f *fencer) run(ctx context.Context, changed <-chan struct{}, resync time.Duration) {
	t := time.NewTicker(resync)
	defer t.Stop()
	for {
		// Until the node has registered, there is nothing to read.
		if err := f.sync(ctx); err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
			f.log.Error(err, "Could not update the fencing watchdog")
		}
		select {
		case <-ctx.Done():
			f.mu.Lock()
			armed := f.armed != nil
			f.mu.Unlock()
			if armed {
				if err := f.wd.Disarm(); err != nil {
					f.log.Error(err, "Could not disarm the watchdog at shutdown")
				} else {
					f.log.Info("Disarmed the watchdog: the agent is stopping")
				}
				f.setArmed(nil)
				cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = f.publish(cctx, nil)
				cancel()
			}
			return
		case <-changed:
		case <-t.C:
		}
	}
}
