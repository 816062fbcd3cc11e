package fencing

import (
	"fmt"
	"time"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// DefaultMaxUnreachable is the share of nodes that may be unreachable at once for fencing to
// act (v1alpha2.DefaultFencingMaxUnreachable, which the node agents share).
const DefaultMaxUnreachable = v1alpha2.DefaultFencingMaxUnreachable

// unarmedGrace is how long a node with no known lease interval (a plain kubelet) may go
// without renewing its Lease before it counts as unreachable: the node monitor's grace period.
const unarmedGrace = 40 * time.Second

// NodeState is what the controller knows of one node.
type NodeState struct {
	Name string
	// Group names the node's NodeGroup; GroupFencing tells whether that group has fencing on.
	Group        string
	GroupFencing bool
	// Armed is the timing the node's agent armed its watchdog with; nil when not armed.
	Armed *deckhousev1.Timing
	// LeaseInterval is how often the node renews its Lease (0: unknown).
	LeaseInterval time.Duration
	// Disarmed is why an admin disarmed the node's fencing ("" when not).
	Disarmed string
	// NotFenceable is why the node's agent says the node cannot be fenced ("" when it does
	// not): it has no watchdog, or could not arm it (Node condition
	// v1alpha2.NodeConditionFencing False).
	NotFenceable string
	// Renewed is when the controller saw the node's Lease renewed, on its own clock.
	Renewed time.Time
}

// Action is what the controller does about a node.
type Action int

const (
	// Reachable: the Lease is fresh.
	Reachable Action = iota
	// Unreachable: the Lease is stale and the node cannot be fenced; nothing is done.
	Unreachable
	// Pending: the Lease is stale; the node is fenced at FenceAt.
	Pending
	// Fence: the node's watchdog has surely fired: end its pods and delete it.
	Fence
	// Paused: the node would be fenced, but too many nodes are unreachable at once.
	Paused
)

func (a Action) String() string {
	return [...]string{"Reachable", "Unreachable", "Pending", "Fence", "Paused"}[a]
}

// Verdict is the decision about one node.
type Verdict struct {
	Node    string
	Action  Action
	Age     time.Duration // since the Lease was last seen renewed
	FenceAt time.Time     // when a Pending node will be fenced
	// Why explains the verdict in words for conditions and events.
	Why string
	// Cause is, for an Unreachable node, why it is not fenced, in words that stay the same
	// while it stays so (Why tells the Lease's age too).
	Cause string
}

// unreachableAfter is how long a node may go without renewing its Lease before it counts as
// unreachable: two missed renewals, or the node monitor's grace for a plain kubelet.
func (n NodeState) unreachableAfter() time.Duration {
	if n.LeaseInterval > 0 {
		return 2*n.LeaseInterval + n.LeaseInterval/2
	}
	return unarmedGrace
}

// Decide judges every node at now. A node is fenced only when its group has fencing on,
// its agent armed the watchdog and does not say the node cannot be fenced (no watchdog,
// whatever annotations an earlier agent left), no admin disarmed it, its Lease is older
// than the armed timeout plus margin, and at most maxUnreachable of all nodes are
// unreachable.
func Decide(now time.Time, nodes []NodeState, maxUnreachable float64) (verdicts []Verdict, unreachable int, storm bool) {
	for _, n := range nodes {
		v := Verdict{Node: n.Name, Age: now.Sub(n.Renewed)}
		if v.Age <= n.unreachableAfter() {
			v.Action = Reachable
			verdicts = append(verdicts, v)
			continue
		}
		unreachable++
		age := v.Age.Round(100 * time.Millisecond)
		switch {
		case !n.GroupFencing:
			v.Action = Unreachable
			group := "it is in no NodeGroup"
			if n.Group != "" {
				group = fmt.Sprintf("its NodeGroup %s has no fencing", n.Group)
			}
			v.Cause = group
			v.Why = fmt.Sprintf("node %s has not renewed its Lease for %s and %s: Ferry cannot tell whether its VMs still run, so it does not start them elsewhere", n.Name, age, group)
		case n.Disarmed != "":
			v.Action = Unreachable
			v.Cause = "its fencing is disarmed (" + n.Disarmed + ")"
			v.Why = fmt.Sprintf("node %s has not renewed its Lease for %s and %s: its VMs are not started elsewhere", n.Name, age, v.Cause)
		case n.NotFenceable != "":
			v.Action = Unreachable
			v.Cause = "it cannot be fenced, its agent says (" + n.NotFenceable + ")"
			v.Why = fmt.Sprintf("node %s has not renewed its Lease for %s and %s: its VMs are not started elsewhere", n.Name, age, v.Cause)
		case n.Armed == nil:
			v.Action = Unreachable
			v.Cause = "its agent never reported an armed watchdog"
			v.Why = fmt.Sprintf("node %s has not renewed its Lease for %s and %s: its VMs are not started elsewhere", n.Name, age, v.Cause)
		default:
			v.FenceAt = n.Renewed.Add(n.Armed.FenceAfter())
			if now.Before(v.FenceAt) {
				v.Action = Pending
				v.Why = fmt.Sprintf("node %s has not renewed its Lease for %s; it is fenced %s after its last renewal (watchdog %s + margin %s), then its VMs restart on other nodes",
					n.Name, age, n.Armed.FenceAfter(), n.Armed.Timeout, n.Armed.Margin)
			} else {
				v.Action = Fence
				v.Why = fmt.Sprintf("node %s has not renewed its Lease for %s, longer than its watchdog timeout %s plus margin %s: it has surely fenced itself",
					n.Name, age, n.Armed.Timeout, n.Armed.Margin)
			}
		}
		verdicts = append(verdicts, v)
	}
	if len(nodes) > 0 && float64(unreachable)/float64(len(nodes)) > maxUnreachable {
		storm = true
		for i := range verdicts {
			if a := verdicts[i].Action; a == Pending || a == Fence {
				verdicts[i].Action = Paused
				verdicts[i].Why = fmt.Sprintf("node %s has not renewed its Lease for %s, but %d of %d nodes are unreachable, more than the %.0f%% allowed: Ferry fences no node while that lasts (a network or control-plane fault is likelier than so many failed nodes)",
					verdicts[i].Node, verdicts[i].Age.Round(100*time.Millisecond), unreachable, len(nodes), maxUnreachable*100)
			}
		}
	}
	return verdicts, unreachable, storm
}
