package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FencingMode is how a node group's failed nodes are fenced.
// +kubebuilder:validation:Enum=Watchdog
type FencingMode string

// FencingWatchdog makes each node reset itself when it loses the cluster.
const FencingWatchdog FencingMode = "Watchdog"

// FencingProfile is a named, tested watchdog timing: a shorter watchdog restarts the VMs
// of a failed node sooner and fences a node that was only slow sooner too.
// +kubebuilder:validation:Enum=Critical;Fast;Balanced;Tolerant
type FencingProfile string

// Fencing profiles, fastest first (see Timing for the figures of each).
const (
	// ProfileCritical: 2 s watchdog, for workloads that must come back within seconds, on a
	// quiet, fast network.
	ProfileCritical FencingProfile = "Critical"
	// ProfileFast: 5 s watchdog.
	ProfileFast FencingProfile = "Fast"
	// ProfileBalanced: 10 s watchdog.
	ProfileBalanced FencingProfile = "Balanced"
	// ProfileTolerant: 20 s watchdog, for slow or noisy networks where a false fencing costs
	// more than a slower failover.
	ProfileTolerant FencingProfile = "Tolerant"
)

// WatchdogSpec tunes the watchdog: set a profile or an explicit timeout (default 60s, as
// Deckhouse).
// +kubebuilder:validation:XValidation:rule="!(has(self.timeout) && has(self.profile))",message="set either watchdog.timeout or watchdog.profile, not both"
type WatchdogSpec struct {
	// Timeout after which a node that cannot reach the cluster fences itself (Deckhouse: 60s).
	// The cluster restarts the node's VMs elsewhere only after this timeout plus a safety margin.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('10m')",message="watchdog.timeout must be between 1s and 10m"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// Profile picks a named timing instead of a timeout: Critical (2s), Fast (5s), Balanced
	// (10s) or Tolerant (20s).
	// +optional
	Profile FencingProfile `json:"profile,omitempty"`
}

// FencingSpec turns fencing on for the group's nodes.
type FencingSpec struct {
	Mode FencingMode `json:"mode"`
	// +optional
	Watchdog *WatchdogSpec `json:"watchdog,omitempty"`
}

// NodeGroupSpec is the group's configuration.
type NodeGroupSpec struct {
	// +kubebuilder:validation:Enum=CloudEphemeral;CloudPermanent;CloudStatic;Static
	// +kubebuilder:default=Static
	// +optional
	NodeType string `json:"nodeType,omitempty"`
	// +optional
	Fencing *FencingSpec `json:"fencing,omitempty"`
}

// NodeGroupStatus is the observed group.
type NodeGroupStatus struct {
	// +optional
	Nodes int32 `json:"nodes,omitempty"`
	// +optional
	Ready int32 `json:"ready,omitempty"`
	// Fencing is the timing in force (from the profile or timeout).
	// +optional
	Fencing *FencingStatus `json:"fencing,omitempty"`
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// FencingStatus shows the fencing timing the controller applies.
type FencingStatus struct {
	Timeout       metav1.Duration `json:"timeout"`
	LeaseInterval metav1.Duration `json:"leaseInterval"`
	// FenceAfter is how long after its last Lease renewal a node is fenced.
	FenceAfter metav1.Duration `json:"fenceAfter"`
	// Unreachable lists the group's nodes whose Lease is older than FenceAfter.
	// +optional
	Unreachable []string `json:"unreachable,omitempty"`
}

// NodeGroup is a set of nodes (label node.deckhouse.io/group=<name>) with common settings.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ng
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.nodeType`
// +kubebuilder:printcolumn:name="Fencing",type=string,JSONPath=`.spec.fencing.mode`
// +kubebuilder:printcolumn:name="Watchdog",type=string,JSONPath=`.status.fencing.timeout`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.nodes`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeGroup struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeGroupSpec   `json:"spec,omitempty"`
	Status NodeGroupStatus `json:"status,omitempty"`
}

// NodeGroupList is a list of NodeGroup.
// +kubebuilder:object:root=true
type NodeGroupList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeGroup `json:"items"`
}

// LabelNodeGroup joins a node to a NodeGroup.
const LabelNodeGroup = "node.deckhouse.io/group"

func init() {
	SchemeBuilder.Register(&NodeGroup{}, &NodeGroupList{})
}
