package vmclass

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func node(name string, labels ...string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		n.Labels[k] = v
	}
	n.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi")}
	return n
}

func TestStatusOfClasses(t *testing.T) {
	const m, f = v1alpha2.LabelCPUModelPrefix, v1alpha2.LabelCPUFeaturePrefix
	nodes := []corev1.Node{
		node("n1", "zone=a"), // tells nothing of its CPU
		node("n2", "zone=a", m+"Nehalem=true", f+"sse2=true", f+"aes=true", f+"avx=true", f+"sse4.2=true", f+"lahf-lm=true"), // tells
		node("n3", "zone=b", m+"Nehalem=true", m+"IvyBridge=true", f+"sse2=true", f+"aes=true", f+"sse4.2=true", f+"lahf-lm=true"),
	}
	class := func(cpu v1alpha2.CPU, zone string) *v1alpha2.VirtualMachineClass {
		c := &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: v1alpha2.VirtualMachineClassSpec{CPU: cpu}}
		if zone != "" {
			c.Spec.NodeSelector.MatchLabels = map[string]string{"zone": zone}
		}
		return c
	}
	for _, c := range []struct {
		name      string
		class     *v1alpha2.VirtualMachineClass
		phase     v1alpha2.VirtualMachineClassPhase
		available []string
		reason    string
		enabled   []string
	}{
		{"generic everywhere", Generic(), v1alpha2.ClassPhaseReady, []string{"n1", "n2", "n3"}, v1alpha2.ReasonSuitableNodesFound, nil},
		{"a model only some nodes have", class(v1alpha2.CPU{Type: v1alpha2.CPUTypeModel, Model: "IvyBridge"}, ""), v1alpha2.ClassPhaseReady, []string{"n1", "n3"}, v1alpha2.ReasonSuitableNodesFound, nil},
		{"a model no node of the zone has", class(v1alpha2.CPU{Type: v1alpha2.CPUTypeModel, Model: "IvyBridge"}, "a"), v1alpha2.ClassPhaseReady, []string{"n1"}, v1alpha2.ReasonSuitableNodesFound, nil},
		{"nodeSelector matches nothing", class(v1alpha2.CPU{Type: v1alpha2.CPUTypeHost}, "c"), v1alpha2.ClassPhasePending, nil, v1alpha2.ReasonNoSuitableNodesFound, nil},
		{"host shows no nodes", class(v1alpha2.CPU{Type: v1alpha2.CPUTypeHost}, ""), v1alpha2.ClassPhaseReady, nil, v1alpha2.ReasonSuitableNodesFound, nil},
		{"features", class(v1alpha2.CPU{Type: v1alpha2.CPUTypeFeatures, Features: []string{"avx"}}, ""), v1alpha2.ClassPhaseReady, []string{"n1", "n2"}, v1alpha2.ReasonSuitableNodesFound, []string{"avx"}},
		{"a feature no node has", class(v1alpha2.CPU{Type: v1alpha2.CPUTypeFeatures, Features: []string{"vmx", "sse2"}}, "b"), v1alpha2.ClassPhasePending, nil, v1alpha2.ReasonNoSuitableNodesFound, []string{"vmx", "sse2"}},
		{"features in libvirt's spelling", class(v1alpha2.CPU{Type: v1alpha2.CPUTypeFeatures, Features: []string{"sse4_2", "lahf_lm"}}, ""), v1alpha2.ClassPhaseReady, []string{"n1", "n2", "n3"}, v1alpha2.ReasonSuitableNodesFound, []string{"sse4_2", "lahf_lm"}},
		{"discovery over the zone b", func() *v1alpha2.VirtualMachineClass {
			c := class(v1alpha2.CPU{Type: v1alpha2.CPUTypeDiscovery, Discovery: &v1alpha2.CPUDiscovery{NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"zone": "b"}}}}, "")
			return c
		}(), v1alpha2.ClassPhaseReady, []string{"n2", "n3"}, v1alpha2.ReasonSuitableNodesFound, []string{"aes", "lahf-lm", "sse2", "sse4.2"}},
		{"discovery over a node that tells nothing", class(v1alpha2.CPU{Type: v1alpha2.CPUTypeDiscovery}, ""), v1alpha2.ClassPhasePending, nil, v1alpha2.ReasonNoCPUFeaturesEnabled, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := observe(c.class, nodes)
			deriveStatus(c.class, o)
			st := c.class.Status
			if st.Phase != c.phase || !reflect.DeepEqual(st.AvailableNodes, c.available) || !reflect.DeepEqual(st.CPUFeatures.Enabled, c.enabled) {
				t.Errorf("phase %s, available %v, enabled %v; want %s, %v, %v", st.Phase, st.AvailableNodes, st.CPUFeatures.Enabled, c.phase, c.available, c.enabled)
			}
			rc := meta.FindStatusCondition(st.Conditions, v1alpha2.ClassConditionReady)
			if rc == nil || rc.Reason != c.reason || rc.Message == "" {
				t.Errorf("Ready %+v; want reason %s with a message", rc, c.reason)
			}
			if c.name == "a feature no node has" && (rc == nil || !strings.Contains(rc.Message, "no node has vmx (")) {
				t.Errorf("Ready %+v; want the message to name vmx, which no node has", rc)
			}
		})
	}
}

func TestMaxFree(t *testing.T) {
	n1, n2 := node("n1"), node("n2")
	n2.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("8")
	pod := func(node, cpu, mem string) corev1.Pod {
		p := corev1.Pod{Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}}}}}}
		return p
	}
	got := maxFree([]*corev1.Node{&n1, &n2}, []corev1.Pod{pod("n1", "1", "1Gi"), pod("n2", "7", "6Gi"), pod("", "9", "9Gi")})
	if cpu, mem := got[corev1.ResourceCPU], got[corev1.ResourceMemory]; cpu.String() != "3" || mem.String() != "7Gi" {
		t.Errorf("free cpu %s, memory %s; want 3 (n1) and 7Gi (n1)", cpu.String(), mem.String())
	}
}
