package controller_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// cpuNode makes a Node that tells the CPU features given, as Ferry's agent labels it.
func cpuNode(t *testing.T, name string, labels map[string]string, features ...string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	for _, f := range features {
		n.Labels[v1alpha2.LabelCPUFeaturePrefix+f] = "true"
	}
	if err := k8s.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, n) })
}

// labelCPU labels Node name with features, as its agent does once it has probed its QEMU;
// the labels go at the end of the test.
func labelCPU(t *testing.T, name string, features ...string) {
	t.Helper()
	add, remove := map[string]any{}, map[string]any{}
	for _, f := range features {
		add[v1alpha2.LabelCPUFeaturePrefix+f] = "true"
		remove[v1alpha2.LabelCPUFeaturePrefix+f] = nil
	}
	patch := func(labels map[string]any) error {
		p, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
		return k8s.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, p))
	}
	if err := patch(add); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = patch(remove) })
}

func hasCPULabels(n *corev1.Node) bool {
	for k := range n.Labels {
		if strings.HasPrefix(k, v1alpha2.LabelCPUFeaturePrefix) {
			return true
		}
	}
	return false
}

// The ADMIN_GUIDE's "vCPU Discovery configuration example": nodes tell their CPU features
// (labels), a class with discovery: {} takes the features every node has, a class whose
// discovery.nodeSelector picks the blue nodes takes theirs and is available where they
// are, its VMs' QEMU gets exactly those features on qemu64, and a class whose
// discovery.nodeSelector matches no node says so. A node that does not tell its features
// yet (its agent has not probed) holds discovery back, and says which node it is.
func TestDiscoveryClassesTakeTheNodesFeatures(t *testing.T) {
	ns := newNamespace(t)
	blue, green := "blue-"+ns, "green-"+ns
	cpuNode(t, "cpu-b1-"+ns, map[string]string{"group": blue}, "sse2", "sse4.2", "popcnt", "avx", "aes")
	cpuNode(t, "cpu-b2-"+ns, map[string]string{"group": blue}, "sse2", "sse4.2", "popcnt", "avx")
	cpuNode(t, "cpu-g1-"+ns, map[string]string{"group": green}, "sse2", "sse4.2", "popcnt", "avx2", "aes")
	cpuNode(t, "cpu-new-"+ns, nil) // its agent has not probed yet

	discovery := func(name string, sel metav1.LabelSelector) {
		createClass(t, &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha2.VirtualMachineClassSpec{
			CPU: v1alpha2.CPU{Type: v1alpha2.CPUTypeDiscovery, Discovery: &v1alpha2.CPUDiscovery{NodeSelector: sel}},
		}})
	}
	universal, cpuX, purple := "universal-"+ns, "cpux-"+ns, "purple-"+ns
	discovery(universal, metav1.LabelSelector{})
	classState := func(name string) (*v1alpha2.VirtualMachineClass, *metav1.Condition) {
		c := getClass(t, name)
		return c, meta.FindStatusCondition(c.Status.Conditions, v1alpha2.ClassConditionDiscovered)
	}
	eventually(t, timeout, universal+" waits for the node that does not tell its features", func() (bool, string) {
		c, d := classState(universal)
		return c.Status.Phase == v1alpha2.ClassPhasePending && d != nil && d.Status == metav1.ConditionFalse && d.Reason == v1alpha2.ReasonDiscoveryFailed &&
			strings.Contains(d.Message, "does not tell its CPU features"), fmt.Sprintf("phase %s, Discovered %+v", c.Status.Phase, d)
	})

	// The agents probe: every node without CPU labels gets some (the test's new node, and
	// any other test's node still here, with a superset of the common features).
	var nodes corev1.NodeList
	if err := k8s.List(ctx, &nodes); err != nil {
		t.Fatal(err)
	}
	for i := range nodes.Items {
		if !hasCPULabels(&nodes.Items[i]) {
			labelCPU(t, nodes.Items[i].Name, "sse2", "sse4.2", "popcnt", "avx", "avx2", "aes")
		}
	}
	eventually(t, timeout, universal+" Ready with the features every node has", func() (bool, string) {
		c, d := classState(universal)
		return c.Status.Phase == v1alpha2.ClassPhaseReady && d != nil && d.Status == metav1.ConditionTrue &&
				slices.Equal(c.Status.CPUFeatures.Enabled, []string{"popcnt", "sse2", "sse4.2"}),
			fmt.Sprintf("phase %s, enabled %v, Discovered %+v", c.Status.Phase, c.Status.CPUFeatures.Enabled, d)
	})

	discovery(cpuX, metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "group", Operator: metav1.LabelSelectorOpIn, Values: []string{blue}}}})
	eventually(t, timeout, cpuX+" Ready with the blue nodes' features, available where they are", func() (bool, string) {
		c, _ := classState(cpuX)
		a := c.Status.AvailableNodes
		return c.Status.Phase == v1alpha2.ClassPhaseReady && slices.Equal(c.Status.CPUFeatures.Enabled, []string{"avx", "popcnt", "sse2", "sse4.2"}) &&
				slices.Contains(a, "cpu-b1-"+ns) && slices.Contains(a, "cpu-b2-"+ns) && !slices.Contains(a, "cpu-g1-"+ns),
			fmt.Sprintf("phase %s, enabled %v, available %v", c.Status.Phase, c.Status.CPUFeatures.Enabled, a)
	})

	makeImageDisk(t, ns, "root")
	v := newVM(ns, "x", "root", "")
	v.Spec.VirtualMachineClassName = cpuX
	if err := k8s.Create(ctx, v); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "x")
	if args := strings.Join(pod.Spec.Containers[0].Args, " "); !strings.Contains(args, "--cpu-model qemu64 --cpu-features avx,popcnt,sse2,sse4.2") {
		t.Errorf("launcher args %q lack --cpu-model qemu64 --cpu-features avx,popcnt,sse2,sse4.2", args)
	}

	discovery(purple, metav1.LabelSelector{MatchLabels: map[string]string{"group": "purple-" + ns}})
	eventually(t, timeout, purple+" says no node matches its discovery.nodeSelector", func() (bool, string) {
		c, d := classState(purple)
		ready := meta.FindStatusCondition(c.Status.Conditions, v1alpha2.ClassConditionReady)
		return c.Status.Phase == v1alpha2.ClassPhasePending && d != nil && d.Status == metav1.ConditionFalse &&
				strings.Contains(d.Message, "no node matches discovery.nodeSelector") && ready != nil && ready.Status == metav1.ConditionFalse,
			fmt.Sprintf("phase %s, Discovered %+v, Ready %+v", c.Status.Phase, d, ready)
	})
}
