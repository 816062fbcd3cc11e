package fencing

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// clusterKey is the one request this controller works on: fencing is judged over all nodes
// at once (the storm guard compares them).
var clusterKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "nodes"}}

// Reconciler fences failed nodes and says which VMs sit on unreachable ones.
type Reconciler struct {
	Client client.Client
	// APIReader reads past the cache just before fencing: a Lease renewed meanwhile
	// stops it.
	APIReader client.Reader
	Recorder  record.EventRecorder
	// MaxUnreachable is the share of nodes beyond which nothing is fenced (default 49%).
	MaxUnreachable float64
	Now            func() time.Time

	mu   sync.Mutex
	seen map[string]observed // node → its Lease as last seen
	// storm is whether the last judgement found too many nodes unreachable.
	storm bool
	// marked is what the last complete pass of markVMs marked VMs for (node → action), and
	// markedAt when: a Lease renewal that changes no verdict does not walk every VM again.
	marked   map[string]Action
	markedAt time.Time
	// marking is whether a pass of markVMs runs (markInBackground); markFailed, whether
	// the last one must be redone.
	marking, markFailed bool
	// fencing is the nodes being fenced (fenceInBackground); fenceFailed, whether one of
	// them failed since the last reconcile.
	fencing     map[string]bool
	fenceFailed bool
	// fencedAt is when each node's fencing began ending its pods (kept fencedMemory):
	// markVMs counts its pods made before then as ended, whatever the cache shows yet.
	fencedAt map[string]time.Time
	// kick asks for a reconcile when a background pass failed.
	kick chan event.TypedGenericEvent[*corev1.Node]
	// spared is the nodes that are stale and that this controller does not fence
	// (Unreachable), with why, as last told in the log and an event: once per change.
	spared map[string]string
}

// remarkEvery is how often markVMs walks every VM even when no verdict changed (a VM
// created on, or moved off, a stale node meanwhile).
const remarkEvery = 10 * time.Second

// observed is a Lease renewal as this controller saw it: the renew time the node wrote and
// when, on this controller's clock, it was first seen. Fencing counts from the latter, so
// the node's clock does not matter and a restarted controller waits a whole period again.
type observed struct {
	renewTime time.Time
	at        time.Time
}

// SetupWithManager registers the controller.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.MaxUnreachable == 0 {
		r.MaxUnreachable = DefaultMaxUnreachable
	}
	r.seen = map[string]observed{}
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{clusterKey}
	})
	r.kick = make(chan event.TypedGenericEvent[*corev1.Node], 1)
	return ctrl.NewControllerManagedBy(mgr).
		Named("fencing").
		WatchesRawSource(source.Channel(r.kick, handler.TypedEnqueueRequestsFromMapFunc(func(context.Context, *corev1.Node) []reconcile.Request {
			return []reconcile.Request{clusterKey}
		}))).
		Watches(&corev1.Node{}, all).
		Watches(&coordinationv1.Lease{}, all).
		Watches(&deckhousev1.NodeGroup{}, all).
		Complete(r)
}

// Reconcile judges every node and acts on the verdicts.
func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (ctrl.Result, error) {
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes); err != nil {
		return ctrl.Result{}, err
	}
	var leases, agentLeases coordinationv1.LeaseList
	if err := r.Client.List(ctx, &leases, client.InNamespace(corev1.NamespaceNodeLease)); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.Client.List(ctx, &agentLeases, client.InNamespace(v1alpha2.FencingLeaseNamespace)); err != nil {
		return ctrl.Result{}, err
	}
	// A node whose agent renews a Lease of its own (beside a real kubelet's) is judged by
	// that one: its watchdog is fed after those renewals, not the kubelet's.
	leases.Items = append(leases.Items, agentLeases.Items...)
	var groups deckhousev1.NodeGroupList
	if err := r.Client.List(ctx, &groups); err != nil {
		return ctrl.Result{}, err
	}
	now := r.Now()
	states := r.observe(now, nodes.Items, leases.Items, groups.Items)
	verdicts, unreachable, storm := Decide(now, states, r.MaxUnreachable)

	byName := map[string]*corev1.Node{}
	for i := range nodes.Items {
		byName[nodes.Items[i].Name] = &nodes.Items[i]
	}
	if ended := r.reportStorm(ctx, storm, unreachable, len(nodes.Items), groups.Items); ended {
		// While too many nodes were unreachable, their agents may have kept feeding their
		// watchdogs (they do when they learn from each other that the control plane is down
		// for most of the cluster): the Lease's age no longer tells when a watchdog fires.
		// Every node that is still stale gets a whole fencing period from now.
		r.restartWindows(now, states)
		return ctrl.Result{Requeue: true}, nil
	}

	var next time.Duration
	wake := func(d time.Duration) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	r.reportSpared(ctx, verdicts, byName)
	// Before anything else: no new pod is placed on a node that stopped renewing.
	taintErr := r.taintUnreachable(ctx, verdicts, byName)
	stale := map[string]Verdict{}
	var fence []Verdict
	for _, v := range verdicts {
		switch v.Action {
		case Reachable:
			// Look again when the node would become unreachable.
			st := stateOf(states, v.Node)
			wake(st.unreachableAfter() - v.Age + 10*time.Millisecond)
			continue
		case Pending:
			wake(v.FenceAt.Sub(now) + 10*time.Millisecond)
		case Fence:
			fence = append(fence, v)
			// Its VMs stay marked FencingPending until their pods end: left out, the
			// node read as no longer stale, and the marking pass that runs beside the
			// fencing took their condition away one write before the VM controller's
			// write of the restart would have.
			pending := v
			pending.Action = Pending
			stale[v.Node] = pending
			continue
		default:
			wake(5 * time.Second)
		}
		stale[v.Node] = v
	}
	// Nodes that failed together are fenced together: one after another, the last one's
	// VMs waited for all the others' pods to be ended (23 s for 5 nodes of 50 under load).
	// And beside the reconcile: a node whose period ends while another is being fenced
	// (a second, under load) is fenced on time.
	if !r.fenceInBackground(ctx, fence, byName) {
		wake(time.Second) // a fencing failed: try again
	}
	if !r.markInBackground(ctx, stale) {
		wake(time.Second) // a pass still runs, or the last one must be redone
	}
	if stale, err := r.updateGroups(ctx, groups.Items, nodes.Items, verdicts); err != nil {
		return ctrl.Result{}, err
	} else if stale {
		wake(time.Second)
	}
	if taintErr != nil {
		return ctrl.Result{}, taintErr
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

func stateOf(states []NodeState, name string) NodeState {
	for _, s := range states {
		if s.Name == name {
			return s
		}
	}
	return NodeState{}
}

// observe builds each node's state, noting Lease renewals on this controller's clock.
func (r *Reconciler) observe(now time.Time, nodes []corev1.Node, leases []coordinationv1.Lease, groups []deckhousev1.NodeGroup) []NodeState {
	r.mu.Lock()
	defer r.mu.Unlock()
	renew := map[string]time.Time{}
	agent := map[string]bool{}
	for _, l := range leases {
		own := l.Namespace == v1alpha2.FencingLeaseNamespace
		if agent[l.Name] && !own {
			continue
		}
		if own {
			agent[l.Name] = true
			delete(renew, l.Name)
		}
		if l.Spec.RenewTime != nil {
			renew[l.Name] = l.Spec.RenewTime.Time
		}
	}
	groupOf := map[string]*deckhousev1.NodeGroup{}
	for i := range groups {
		groupOf[groups[i].Name] = &groups[i]
	}
	present := map[string]bool{}
	var out []NodeState
	for _, n := range nodes {
		present[n.Name] = true
		seen, ok := r.seen[n.Name]
		if rt := renew[n.Name]; !ok || !rt.Equal(seen.renewTime) {
			seen = observed{renewTime: rt, at: now}
			r.seen[n.Name] = seen
		}
		st := NodeState{Name: n.Name, Renewed: seen.at, Group: n.Labels[deckhousev1.LabelNodeGroup],
			Disarmed: n.Annotations[v1alpha2.AnnotationFencingDisarmed], NotFenceable: v1alpha2.NotFenceable(n.Status.Conditions)}
		if g := groupOf[st.Group]; g != nil {
			st.GroupFencing = g.FencingEnabled()
		}
		st.LeaseInterval, _ = time.ParseDuration(n.Annotations[v1alpha2.AnnotationLeaseInterval])
		// What the agent armed, not what the group says now: a group just changed may not
		// have reached the node yet.
		if t, ok := v1alpha2.ArmedTiming(n.Annotations); ok {
			st.Armed = &t
		}
		out = append(out, st)
	}
	for name := range r.seen {
		if !present[name] {
			delete(r.seen, name)
		}
	}
	return out
}

// fence ends the pods of a node whose watchdog has fired and deletes the Node, unless its
// Lease was renewed after all.
// wakeUp asks for a reconcile (a background pass failed and must be redone).
func (r *Reconciler) wakeUp() {
	select {
	case r.kick <- event.TypedGenericEvent[*corev1.Node]{Object: &corev1.Node{}}:
	default: // one is asked for already
	}
}

// fenceInBackground fences each node of verdicts that is not being fenced already, each
// beside the reconcile, and tells whether no fencing failed since it was last asked.
func (r *Reconciler) fenceInBackground(ctx context.Context, verdicts []Verdict, nodes map[string]*corev1.Node) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	failed := r.fenceFailed
	r.fenceFailed = false
	if r.fencing == nil {
		r.fencing = map[string]bool{}
	}
	for _, v := range verdicts {
		node := nodes[v.Node]
		if node == nil || r.fencing[v.Node] {
			continue
		}
		r.fencing[v.Node] = true
		go func() {
			// Not bound to the reconcile's context, which may end with it.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
			defer cancel()
			err := r.fence(fctx, node, v)
			if err != nil {
				ctrl.LoggerFrom(ctx).Error(err, "Could not fence the node", "node", v.Node)
			}
			r.mu.Lock()
			delete(r.fencing, v.Node)
			r.fenceFailed = r.fenceFailed || err != nil
			if err != nil {
				// Its pods that did not end are live until a retry fences the node.
				delete(r.fencedAt, v.Node)
			}
			r.mu.Unlock()
			if err != nil {
				r.wakeUp()
			}
		}()
	}
	return !failed
}

func (r *Reconciler) fence(ctx context.Context, node *corev1.Node, v Verdict) error {
	log := ctrl.LoggerFrom(ctx).WithValues("node", node.Name)
	r.mu.Lock()
	seen := r.seen[node.Name]
	r.mu.Unlock()
	lease, err := r.fencingLease(ctx, node.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err == nil && lease.Spec.RenewTime != nil && !lease.Spec.RenewTime.Time.Equal(seen.renewTime) {
		log.Info("Not fencing: the node renewed its Lease after all")
		return nil
	}
	// The Node as it is now, past the cache: an agent that just said the node has no
	// watchdog (restarted without one) stops the fencing too.
	var fresh corev1.Node
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(node), &fresh); err != nil {
		return client.IgnoreNotFound(err)
	}
	if why := v1alpha2.NotFenceable(fresh.Status.Conditions); why != "" {
		log.Info("Not fencing: the node's agent says it cannot be fenced", "why", why)
		return nil
	}
	r.Recorder.Eventf(node, corev1.EventTypeWarning, "Fencing", "%s; ending its pods and removing the node", v.Why)
	log.Info("Fencing node", "why", v.Why)
	r.mu.Lock()
	if r.fencedAt == nil {
		r.fencedAt = map[string]time.Time{}
	}
	r.fencedAt[node.Name] = r.Now()
	r.mu.Unlock()

	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.MatchingFields{"spec.nodeName": node.Name}); err != nil {
		return fmt.Errorf("listing the pods of node %s: %w", node.Name, err)
	}
	msg := fmt.Sprintf("node %s was fenced: it last renewed its Lease %s ago, so its watchdog (timeout %s) has stopped its VMs", node.Name, v.Age.Round(100*time.Millisecond), armedTimeout(node))
	// The pods end at once (a few at a time): each is a VM waiting to restart elsewhere.
	errs := make([]error, len(pods.Items))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range pods.Items {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = r.endPod(ctx, &pods.Items[i], msg)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, ns := range []string{v1alpha2.FencingLeaseNamespace, corev1.NamespaceNodeLease} {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: node.Name}}
		if err := r.Client.Delete(ctx, l); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	uid := node.UID
	if err := r.Client.Delete(ctx, node, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing node %s: %w", node.Name, err)
	}
	// A pod bound to the node between the listing and the Node's removal (the scheduler
	// placed it before the node was tainted unreachable) would never start, and would end
	// only when the garbage collector of orphaned pods finds it, a minute later.
	late, err := r.endLatePods(ctx, node.Name, &pods, msg)
	if err != nil {
		return err
	}
	r.Recorder.Eventf(node, corev1.EventTypeNormal, "Fenced", "Removed node %s and ended its %d pod(s); its VMs restart on other nodes as their runPolicy says", node.Name, len(pods.Items)+late)
	log.Info("Fenced node", "pods", len(pods.Items))
	r.mu.Lock()
	delete(r.seen, node.Name)
	r.mu.Unlock()
	return nil
}

// endLatePods ends the pods of node that the first listing (before) did not hold, and
// returns how many.
func (r *Reconciler) endLatePods(ctx context.Context, node string, before *corev1.PodList, msg string) (int, error) {
	var pods corev1.PodList
	if err := r.APIReader.List(ctx, &pods, client.MatchingFields{"spec.nodeName": node}); err != nil {
		return 0, fmt.Errorf("listing the pods of node %s again: %w", node, err)
	}
	seen := map[types.UID]bool{}
	for _, p := range before.Items {
		seen[p.UID] = true
	}
	n := 0
	var errs []error
	for i := range pods.Items {
		if seen[pods.Items[i].UID] {
			continue
		}
		n++
		errs = append(errs, r.endPod(ctx, &pods.Items[i], msg))
	}
	return n, errors.Join(errs...)
}

// reportSpared says, in the log and in an event on the Node, why a stale node is not
// fenced (its group has no fencing, it is disarmed, its agent has no watchdog, ...): once
// when it becomes so, and again when the reason changes.
func (r *Reconciler) reportSpared(ctx context.Context, verdicts []Verdict, nodes map[string]*corev1.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.spared == nil {
		r.spared = map[string]string{}
	}
	now := map[string]bool{}
	for _, v := range verdicts {
		if v.Action != Unreachable {
			continue
		}
		now[v.Node] = true
		if r.spared[v.Node] == v.Cause {
			continue
		}
		r.spared[v.Node] = v.Cause
		ctrl.LoggerFrom(ctx).Info("Not fencing an unreachable node", "node", v.Node, "why", v.Why)
		if n := nodes[v.Node]; n != nil {
			r.Recorder.Event(n, corev1.EventTypeWarning, v1alpha2.ReasonNodeUnreachable, v.Why)
		}
	}
	for n := range r.spared {
		if !now[n] {
			delete(r.spared, n)
		}
	}
}

// fencingLease reads, past the cache, the Lease a node is judged by: its agent's own
// when it has one, else the kubelet's.
func (r *Reconciler) fencingLease(ctx context.Context, node string) (*coordinationv1.Lease, error) {
	var lease coordinationv1.Lease
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: v1alpha2.FencingLeaseNamespace, Name: node}, &lease)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: node}, &lease)
	}
	return &lease, err
}

func armedTimeout(n *corev1.Node) string {
	if t := n.Annotations[v1alpha2.AnnotationWatchdogTimeout]; t != "" {
		return t
	}
	return "unknown"
}

// endPod marks a pod of a fenced node Failed (its process is gone with the node), so that
// its owner reacts as to any ended pod; other than launcher pods are removed outright.
func (r *Reconciler) endPod(ctx context.Context, p *corev1.Pod, msg string) error {
	if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
		now := metav1.Now()
		p.Status.Phase = corev1.PodFailed
		p.Status.Reason, p.Status.Message = v1alpha2.ReasonNodeFenced, msg
		var statuses []corev1.ContainerStatus
		for _, c := range p.Spec.Containers {
			statuses = append(statuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: v1alpha2.ReasonNodeFenced, Message: msg, FinishedAt: now}}})
		}
		p.Status.ContainerStatuses = statuses
		for i, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
				p.Status.Conditions[i].Status = corev1.ConditionFalse
				p.Status.Conditions[i].Reason = v1alpha2.ReasonNodeFenced
				p.Status.Conditions[i].LastTransitionTime = now
			}
		}
		if err := r.Client.Status().Update(ctx, p); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("ending pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	if _, launcher := p.Labels[v1alpha2.LabelVMName]; !launcher {
		if err := r.Client.Delete(ctx, p, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// reportStorm tells, once per change, that fencing is paused or resumed.
// It returns whether a storm just ended.
func (r *Reconciler) reportStorm(ctx context.Context, storm bool, unreachable, total int, groups []deckhousev1.NodeGroup) (ended bool) {
	r.mu.Lock()
	changed := storm != r.storm
	r.storm = storm
	r.mu.Unlock()
	if !changed {
		return false
	}
	ended = !storm
	for i := range groups {
		g := &groups[i]
		if !g.FencingEnabled() {
			continue
		}
		if storm {
			r.Recorder.Eventf(g, corev1.EventTypeWarning, v1alpha2.ReasonFencingPaused,
				"%d of %d nodes are unreachable, more than the %.0f%% allowed: no node is fenced until fewer are", unreachable, total, r.MaxUnreachable*100)
		} else {
			r.Recorder.Eventf(g, corev1.EventTypeNormal, "FencingResumed", "%d of %d nodes are unreachable: fencing acts again", unreachable, total)
		}
	}
	ctrl.LoggerFrom(ctx).Info("Fencing storm guard", "paused", storm, "unreachable", unreachable, "nodes", total)
	return ended
}

// restartWindows counts the Lease age of every stale node from now.
func (r *Reconciler) restartWindows(now time.Time, states []NodeState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, st := range states {
		if now.Sub(st.Renewed) > st.unreachableAfter() {
			o := r.seen[st.Name]
			o.at = now
			r.seen[st.Name] = o
		}
	}
}

// Fencing condition. A group read before someone else wrote its status is not written
// from that copy (the write carries its resourceVersion); stale says to look again soon.
func (r *Reconciler) updateGroups(ctx context.Context, groups []deckhousev1.NodeGroup, nodes []corev1.Node, verdicts []Verdict) (stale bool, err error) {
	r.mu.Lock()
	storm := r.storm
	r.mu.Unlock()
	action := map[string]Action{}
	for _, v := range verdicts {
		action[v.Node] = v.Action
	}
	for i := range groups {
		g := &groups[i]
		orig := g.DeepCopy()
		g.Status.Nodes, g.Status.Ready = 0, 0
		var unreachable []string
		for _, n := range nodes {
			if n.Labels[deckhousev1.LabelNodeGroup] != g.Name {
				continue
			}
			g.Status.Nodes++
			if a, ok := action[n.Name]; ok && a == Reachable {
				g.Status.Ready++
			} else {
				unreachable = append(unreachable, n.Name)
			}
		}
		sort.Strings(unreachable)
		cond := metav1.Condition{Type: v1alpha2.NodeGroupConditionFencing, ObservedGeneration: g.Generation}
		if g.FencingEnabled() {
			t := g.Spec.Fencing.Timing()
			g.Status.Fencing = &deckhousev1.FencingStatus{Timeout: metav1.Duration{Duration: t.Timeout},
				LeaseInterval: metav1.Duration{Duration: t.LeaseInterval}, FenceAfter: metav1.Duration{Duration: t.FenceAfter()}, Unreachable: unreachable}
			cond.Status, cond.Reason = metav1.ConditionTrue, v1alpha2.ReasonFencingActive
			cond.Message = "nodes that stop renewing their Lease are fenced: " + t.String()
			if storm {
				cond.Status, cond.Reason = metav1.ConditionFalse, v1alpha2.ReasonTooManyUnreachable
				cond.Message = fmt.Sprintf("more than %.0f%% of the cluster's nodes are unreachable: no node is fenced while that lasts", r.MaxUnreachable*100)
			}
		} else {
			g.Status.Fencing = nil
			cond.Status, cond.Reason = metav1.ConditionFalse, v1alpha2.ReasonFencingDisabled
			cond.Message = "the group has no fencing: VMs of its unreachable nodes are not restarted elsewhere"
		}
		meta.SetStatusCondition(&g.Status.Conditions, cond)
		if equality.Semantic.DeepEqual(orig.Status, g.Status) {
			continue
		}
		if err := r.Client.Status().Patch(ctx, g, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); apierrors.IsConflict(err) {
			stale = true
		} else if client.IgnoreNotFound(err) != nil {
			return stale, fmt.Errorf("updating NodeGroup %s: %w", g.Name, err)
		}
	}
	return stale, nil
}
