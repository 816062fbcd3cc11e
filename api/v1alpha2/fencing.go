package v1alpha2

import (
	"time"

	corev1 "k8s.io/api/core/v1"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
)

// Fencing: annotations on Nodes and VMs, condition types and reasons.
const (
	// AnnotationFencingDisarmed on a Node disarms its watchdog for planned maintenance; the
	// value says why. The fencing controller never fences a disarmed node.
	AnnotationFencingDisarmed = "virtualization.ferryvm.io/fencing-disarmed"
	// TaintUnreachable (effect NoSchedule) is on a Node while the fencing controller counts
	// it unreachable (its Lease stale): the scheduler places no new pod there, so no VM
	// restarted from a failed node lands on another that is failing too. Removed when the
	// node renews its Lease again; a fenced node's Node goes with it. Kubernetes' own
	// node.kubernetes.io/unreachable comes only after the node monitor's grace period.
	TaintUnreachable = "virtualization.ferryvm.io/unreachable"
	// AnnotationWatchdogTimeout on a Node is the timeout its agent armed the watchdog with
	// (set by the agent, removed when it disarms); a node without it is never fenced.
	AnnotationWatchdogTimeout = "virtualization.ferryvm.io/watchdog-timeout"
	// AnnotationLeaseInterval on a Node is how often its agent renews the Lease and feeds
	// the watchdog.
	AnnotationLeaseInterval = "virtualization.ferryvm.io/lease-interval"
	// AnnotationFencingToken on a VM is the generation of its disk lease: every cold start
	// of the VM gets a higher one, and a launcher holding a lower one may not run.
	AnnotationFencingToken = "virtualization.ferryvm.io/fencing-token"

	// VMConditionNodeReachable is False while the VM's node does not renew its Lease.
	VMConditionNodeReachable = "NodeReachable"

	// ReasonNodeFenced ends the launcher pods of a fenced node (pod reason and VM reason).
	ReasonNodeFenced = "NodeFenced"
	// ReasonFencingPending: the node is unreachable and will be fenced when its watchdog
	// has surely fired.
	ReasonFencingPending = "FencingPending"
	// ReasonNodeUnreachable: the node is unreachable and has no armed watchdog: Ferry cannot
	// know whether the VM still runs there, so it does not start it elsewhere.
	ReasonNodeUnreachable = "NodeUnreachable"
	// ReasonFencingPaused: too many nodes are unreachable at once to fence any.
	ReasonFencingPaused = "FencingPaused"
	// ReasonSuperseded ends a launcher whose disk lease was taken by a newer instance.
	ReasonSuperseded = "Superseded"

	// NodeConditionFencing is a Node's condition, kept by its agent: whether the node can
	// be fenced. True (reason the watchdog's kind: ReasonWatchdogDevice, ReasonWatchdogProcess,
	// ReasonSimulatedWatchdog) while the agent has a watchdog, which it arms when the node's
	// group has fencing on; False when it has none (ReasonNoWatchdogDevice: --watchdog=auto
	// found no device; ReasonWatchdogDisabled: --watchdog=none) or cannot arm the one it has
	// (ReasonWatchdogFailed). The fencing controller never fences a node whose condition is
	// False: nothing would stop its VMs, which would then run twice.
	NodeConditionFencing    = "virtualization.ferryvm.io/fencing"
	ReasonWatchdogDevice    = "WatchdogDevice"
	ReasonWatchdogProcess   = "WatchdogProcess"
	ReasonSimulatedWatchdog = "SimulatedWatchdog"
	ReasonNoWatchdogDevice  = "NoWatchdogDevice"
	ReasonWatchdogDisabled  = "WatchdogDisabled"
	ReasonWatchdogFailed    = "WatchdogFailed"

	// NodeGroupConditionFencing is True while the group's fencing may act.
	NodeGroupConditionFencing = "Fencing"
	ReasonFencingActive       = "Active"
	ReasonFencingDisabled     = "Disabled"
	ReasonTooManyUnreachable  = "TooManyUnreachable"
)

// NotFenceable is why a Node's agent says the node cannot be fenced (its condition
// NodeConditionFencing is False), or "" when it does not say so.
func NotFenceable(conditions []corev1.NodeCondition) string {
	for _, c := range conditions {
		if c.Type == NodeConditionFencing && c.Status == corev1.ConditionFalse {
			return c.Reason + ": " + c.Message
		}
	}
	return ""
}

// ArmedTiming is the timing a node's agent armed its watchdog with, from the Node's
// annotations (what the fencing controller goes by); false when it shows none.
func ArmedTiming(annotations map[string]string) (deckhousev1.Timing, bool) {
	timeout, err1 := time.ParseDuration(annotations[AnnotationWatchdogTimeout])
	interval, err2 := time.ParseDuration(annotations[AnnotationLeaseInterval])
	if err1 != nil || err2 != nil || timeout <= 0 || interval <= 0 {
		return deckhousev1.Timing{}, false
	}
	return deckhousev1.ArmedTiming(timeout, interval), true
}

// FencingLeaseNamespace holds the Leases of node agents that leave the kubelet's part to a
// real kubelet (a DaemonSet on a cluster): the kubelet renews kube-node-lease/<node>, the
// agent renews FencingLeaseNamespace/<node> and feeds its watchdog after each renewal. The
// fencing controller goes by this Lease when a node has one, else by kube-node-lease's.
const FencingLeaseNamespace = "ferry-node-lease"

// DefaultFencingMaxUnreachable is the share of nodes that may be unreachable at once for
// fencing to act (as medik8s' default maxUnhealthy): beyond it the cause is more likely the
// network or the control plane than the nodes. The fencing controller and the node agents
// (which feed their watchdogs through a control-plane outage beyond it) must agree on it.
const DefaultFencingMaxUnreachable = 0.49

// The VM network modes of the controller and the node agents (their --vm-network).
const (
	// VMNetworkRouted: each VM gets a NIC and its address by DHCP, routed to the node it runs on.
	VMNetworkRouted = "routed"
	// VMNetworkNone: VMs hold an address but have no NIC.
	VMNetworkNone = "none"
)

// Launcher exit codes that do not mean a crash (package launcher sets them). A launcher
// pod run by a real kubelet shows them only as its container's exit code.
const (
	LauncherExitMigrated   = 3 // the VM live-migrated away: it runs on in the target pod
	LauncherExitSuperseded = 4 // a newer instance of the VM holds its disk lease
)
