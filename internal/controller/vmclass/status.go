package vmclass

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// observation is what one reconcile of a class saw.
type observation struct {
	available []*corev1.Node // nodes that match the class's nodeSelector and have its CPU
	why       string         // why none does, when none does
	// Discovery: the features common to the discovery nodes (enabled) and to the available
	// nodes beyond those (notEnabled); discoveryErr says why they are unknown.
	enabled, notEnabled []string
	discoveryErr        string
	free                corev1.ResourceList
	users               []string
}

// observe judges the nodes for class. Nodes say which CPU models and features they have
// through Deckhouse's labels (v1alpha2.LabelCPUModelPrefix, LabelCPUFeaturePrefix), which
// Ferry's agent sets from what the node's QEMU offers a guest under its accelerator
// (internal/agent/cpulabels.go). A node without any such label (its agent has not probed
// yet, or could not; simulated nodes) is taken to run every model and feature: QEMU
// refuses, with enforce, what it cannot, and the VM's status then says which feature. A
// node that has such labels is held to them.
func observe(class *v1alpha2.VirtualMachineClass, nodes []corev1.Node) observation {
	var o observation
	reqs := classRequirements(class.Spec.NodeSelector)
	sel := nodeaffinity.NewLazyErrorNodeSelector(&corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: reqs}}})
	var placed []*corev1.Node
	for i := range nodes {
		if len(reqs) == 0 {
			// No nodeSelector: every node (an empty term would match none).
			placed = append(placed, &nodes[i])
		} else if ok, err := sel.Match(&nodes[i]); err != nil {
			o.why = "the class's nodeSelector is invalid: " + err.Error()
			return o
		} else if ok {
			placed = append(placed, &nodes[i])
		}
	}
	cpu := class.Spec.CPU
	var has func(*corev1.Node) bool
	switch cpu.Type {
	case v1alpha2.CPUTypeModel:
		has = func(n *corev1.Node) bool {
			return !labelled(n, v1alpha2.LabelCPUModelPrefix) || n.Labels[v1alpha2.LabelCPUModelPrefix+cpu.Model] == "true"
		}
	case v1alpha2.CPUTypeFeatures:
		o.enabled = slices.Clone(cpu.Features)
		has = func(n *corev1.Node) bool {
			return !labelled(n, v1alpha2.LabelCPUFeaturePrefix) || hasAll(n, cpu.Features)
		}
	case v1alpha2.CPUTypeDiscovery:
		o.enabled = class.Status.CPUFeatures.Enabled
		if len(o.enabled) == 0 {
			// Fixed once found: nodes that come or go later change nothing.
			o.enabled, o.discoveryErr = discover(class, nodes)
		}
		has = func(n *corev1.Node) bool { return len(o.enabled) > 0 && hasAll(n, o.enabled) }
	default:
		has = func(*corev1.Node) bool { return true }
	}
	for _, n := range placed {
		if has(n) {
			o.available = append(o.available, n)
		}
	}
	switch {
	case len(o.available) > 0:
	case len(nodes) == 0:
		o.why = "the cluster has no node"
	case len(placed) == 0:
		o.why = fmt.Sprintf("no node matches the class's nodeSelector (%d nodes in the cluster)", len(nodes))
	case cpu.Type == v1alpha2.CPUTypeModel:
		o.why = fmt.Sprintf("no node of the class's nodeSelector has CPU model %s (node label %s%s)", cpu.Model, v1alpha2.LabelCPUModelPrefix, cpu.Model)
	default:
		o.why = "no node of the class's nodeSelector has all the class's CPU features"
		if none := onNoNode(placed, o.enabled); len(none) > 0 {
			o.why += fmt.Sprintf("; no node has %s (node labels %s<feature>, which Ferry's agent sets from what the node's QEMU offers under its accelerator)",
				strings.Join(none, ", "), v1alpha2.LabelCPUFeaturePrefix)
		}
	}
	if cpu.Type == v1alpha2.CPUTypeDiscovery && len(o.enabled) > 0 {
		o.notEnabled = commonFeatures(o.available, o.enabled)
	}
	return o
}

// discover is the features every discovery node has (the class's discovery.nodeSelector;
// all nodes without one), or why there are none.
func discover(class *v1alpha2.VirtualMachineClass, nodes []corev1.Node) ([]string, string) {
	sel := labels.Everything()
	if d := class.Spec.CPU.Discovery; d != nil {
		s, err := metav1.LabelSelectorAsSelector(&d.NodeSelector)
		if err != nil {
			return nil, "discovery.nodeSelector is invalid: " + err.Error()
		}
		sel = s
	}
	var pool []*corev1.Node
	for i := range nodes {
		if sel.Matches(labels.Set(nodes[i].Labels)) {
			pool = append(pool, &nodes[i])
		}
	}
	if len(pool) == 0 {
		return nil, "no node matches discovery.nodeSelector"
	}
	for _, n := range pool {
		if !labelled(n, v1alpha2.LabelCPUFeaturePrefix) {
			return nil, fmt.Sprintf("node %s does not tell its CPU features (labels %s<feature>=true): Ferry's agent sets them once it has asked the node's QEMU, a moment after it starts; if they do not come, the agent's log says why", n.Name, v1alpha2.LabelCPUFeaturePrefix)
		}
	}
	f := commonFeatures(pool, nil)
	if len(f) == 0 {
		return nil, "the discovery nodes have no CPU feature in common"
	}
	return f, ""
}

// commonFeatures are the features every node of nodes has, less those in except, sorted.
func commonFeatures(nodes []*corev1.Node, except []string) []string {
	var out []string
	if len(nodes) == 0 {
		return nil
	}
	for _, f := range features(nodes[0]) {
		if !slices.Contains(except, f) && allHave(nodes, f) {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

// onNoNode are the features of features that none of nodes has.
func onNoNode(nodes []*corev1.Node, features []string) []string {
	var out []string
	for _, f := range features {
		if !slices.ContainsFunc(nodes, func(n *corev1.Node) bool { return hasAll(n, []string{f}) }) {
			out = append(out, f)
		}
	}
	return out
}

func allHave(nodes []*corev1.Node, f string) bool {
	for _, n := range nodes {
		if !hasAll(n, []string{f}) {
			return false
		}
	}
	return true
}

func features(n *corev1.Node) []string {
	var out []string
	for k, v := range n.Labels {
		if f, ok := strings.CutPrefix(k, v1alpha2.LabelCPUFeaturePrefix); ok && v == "true" {
			out = append(out, f)
		}
	}
	return out
}

func labelled(n *corev1.Node, prefix string) bool {
	for k := range n.Labels {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// hasAll is whether node n tells every one of features. A feature may be named as QEMU
// also accepts it (sse4_2, lahf_lm, pclmuldq: libvirt's names, which Deckhouse's classes
// use); the agent labels nodes with -cpu help's names (sse4.2, lahf-lm, pclmulqdq).
func hasAll(n *corev1.Node, features []string) bool {
	for _, f := range features {
		if n.Labels[v1alpha2.LabelCPUFeaturePrefix+f] != "true" && n.Labels[v1alpha2.LabelCPUFeaturePrefix+hypervisor.CanonicalCPUFeature(f)] != "true" {
			return false
		}
	}
	return true
}

// maxFree is the most CPU and the most memory left on any of nodes once the requests of
// pods (those bound to them) are taken from their allocatable.
func maxFree(nodes []*corev1.Node, pods []corev1.Pod) corev1.ResourceList {
	used := map[string]corev1.ResourceList{}
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName == "" {
			continue
		}
		u := used[p.Spec.NodeName]
		if u == nil {
			u = corev1.ResourceList{}
			used[p.Spec.NodeName] = u
		}
		for _, c := range p.Spec.Containers {
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := c.Resources.Requests[r]; ok {
					sum := u[r]
					sum.Add(q)
					u[r] = sum
				}
			}
		}
	}
	out := corev1.ResourceList{}
	for _, n := range nodes {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			a, ok := n.Status.Allocatable[r]
			if !ok {
				continue
			}
			left := a.DeepCopy()
			left.Sub(used[n.Name][r])
			if left.Sign() < 0 {
				left = resource.Quantity{Format: a.Format}
			}
			if cur, ok := out[r]; !ok || left.Cmp(cur) > 0 {
				out[r] = left
			}
		}
	}
	return out
}

// deriveStatus writes what o saw into class's status.
func deriveStatus(class *v1alpha2.VirtualMachineClass, o observation) {
	st := &class.Status
	gen := class.Generation
	set := func(t string, ok bool, reason, msg string) {
		s := metav1.ConditionFalse
		if ok {
			s = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	cpu := class.Spec.CPU.Type
	host := cpu == v1alpha2.CPUTypeHost || cpu == v1alpha2.CPUTypeHostPassthrough
	st.AvailableNodes = nil
	if !host {
		for _, n := range o.available {
			st.AvailableNodes = append(st.AvailableNodes, n.Name)
		}
	}
	st.MaxAllocatableResources = o.free
	st.CPUFeatures = v1alpha2.CPUFeatures{}
	if cpu == v1alpha2.CPUTypeFeatures || cpu == v1alpha2.CPUTypeDiscovery {
		st.CPUFeatures = v1alpha2.CPUFeatures{Enabled: o.enabled, NotEnabledCommon: o.notEnabled}
	}
	if cpu == v1alpha2.CPUTypeDiscovery {
		if len(o.enabled) > 0 {
			set(v1alpha2.ClassConditionDiscovered, true, v1alpha2.ReasonDiscoverySucceeded, fmt.Sprintf("%d CPU features common to the discovery nodes", len(o.enabled)))
		} else {
			set(v1alpha2.ClassConditionDiscovered, false, v1alpha2.ReasonDiscoveryFailed, o.discoveryErr)
		}
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha2.ClassConditionDiscovered)
	}
	switch {
	case cpu == v1alpha2.CPUTypeDiscovery && len(o.enabled) == 0:
		st.Phase = v1alpha2.ClassPhasePending
		set(v1alpha2.ClassConditionReady, false, v1alpha2.ReasonNoCPUFeaturesEnabled, "no CPU features enabled: "+o.discoveryErr)
	case len(o.available) == 0:
		st.Phase = v1alpha2.ClassPhasePending
		set(v1alpha2.ClassConditionReady, false, v1alpha2.ReasonNoSuitableNodesFound, o.why)
	default:
		st.Phase = v1alpha2.ClassPhaseReady
		set(v1alpha2.ClassConditionReady, true, v1alpha2.ReasonSuitableNodesFound, fmt.Sprintf("%d nodes can run the class's VMs", len(o.available)))
	}
	setInUse(class, o.users)
	st.ObservedGeneration = gen
}

// setInUse says which VMs use the class (a few of them by name).
func setInUse(class *v1alpha2.VirtualMachineClass, users []string) {
	c := metav1.Condition{Type: v1alpha2.ClassConditionInUse, Status: metav1.ConditionFalse, Reason: v1alpha2.ReasonVMClassNotInUse,
		Message: "no VirtualMachine uses the class", ObservedGeneration: class.Generation}
	if len(users) > 0 {
		shown := users[:min(len(users), 5)]
		more := ""
		if len(users) > len(shown) {
			more = fmt.Sprintf(" and %d more", len(users)-len(shown))
		}
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha2.ReasonVMClassInUse
		c.Message = fmt.Sprintf("used by %d VirtualMachines (%s%s)", len(users), strings.Join(shown, ", "), more)
		if !class.DeletionTimestamp.IsZero() {
			c.Message += "; the class is deleted once none uses it"
		}
	}
	meta.SetStatusCondition(&class.Status.Conditions, c)
}
