package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FencingMode is how a node group's failed nodes are fenced.
// +kubebuilder:validation:Enum=Watchdog
type FencingMode string

// FencingWatchdog makes each node reset itself when it loses the cluster.
const FencingWatchdog FencingMode = "Watchdog"

// WatchdogSpec tunes the watchdog.
type WatchdogSpec struct {
	// Timeout after which a node that cannot reach the cluster fences itself (Deckhouse: 60s).
	// +kubebuilder:default="60s"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
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
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeGroup is a set of nodes (label node.deckhouse.io/group=<name>) with common settings.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ng
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.nodeType`
// +kubebuilder:printcolumn:name="Fencing",type=string,JSONPath=`.spec.fencing.mode`
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
