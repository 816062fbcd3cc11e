package vmclass

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestEffectiveMergesTheClassIntoTheVM(t *testing.T) {
	class := &v1alpha2.VirtualMachineClass{Spec: v1alpha2.VirtualMachineClassSpec{
		NodeSelector: v1alpha2.NodeSelector{
			MatchLabels:      map[string]string{"zone": "a"},
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "gpu", Operator: corev1.NodeSelectorOpDoesNotExist}},
		},
		Tolerations: []corev1.Toleration{
			{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "class", Effect: corev1.TaintEffectNoSchedule},
			{Key: "vms", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		},
		SizingPolicies: []v1alpha2.SizingPolicy{{Cores: &v1alpha2.SizingPolicyCores{Min: 1, Max: 4}, DefaultCoreFraction: ptrIntOrString(20)}},
	}}
	vm := &v1alpha2.VirtualMachine{}
	vm.Spec.CPU.Cores = 2
	vm.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	vm.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "vm", Effect: corev1.TaintEffectNoSchedule}}
	vm.Spec.Affinity = &v1alpha2.VirtualMachineAffinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{
			{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "rack", Operator: corev1.NodeSelectorOpIn, Values: []string{"1"}}}},
			{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "rack", Operator: corev1.NodeSelectorOpIn, Values: []string{"2"}}}},
		}}}}
	orig := vm.DeepCopy()

	got := Effective(vm, class)
	if !reflect.DeepEqual(vm, orig) {
		t.Fatal("Effective changed the VM it was given")
	}
	classReqs := []corev1.NodeSelectorRequirement{
		{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}},
		{Key: "gpu", Operator: corev1.NodeSelectorOpDoesNotExist},
	}
	for i, term := range got.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		if want := append(orig.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[i].MatchExpressions, classReqs...); !reflect.DeepEqual(term.MatchExpressions, want) {
			t.Errorf("term %d: %v; want the VM's and the class's: %v", i, term.MatchExpressions, want)
		}
	}
	if !reflect.DeepEqual(got.Spec.NodeSelector, vm.Spec.NodeSelector) {
		t.Errorf("nodeSelector %v; want the VM's", got.Spec.NodeSelector)
	}
	// The VM's toleration of dedicated:NoSchedule wins over the class's; vms is added.
	if len(got.Spec.Tolerations) != 2 || got.Spec.Tolerations[0].Value != "vm" || got.Spec.Tolerations[1].Key != "vms" {
		t.Errorf("tolerations %+v", got.Spec.Tolerations)
	}
	if got.Spec.CPU.CoreFraction != "20%" {
		t.Errorf("coreFraction %q; want the policy's default 20%%", got.Spec.CPU.CoreFraction)
	}

	// A VM without affinity gets one term, the class's; its own coreFraction stays.
	plain := &v1alpha2.VirtualMachine{}
	plain.Spec.CPU = v1alpha2.CPUSpec{Cores: 1, CoreFraction: "50%"}
	got = Effective(plain, class)
	if terms := got.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms; len(terms) != 1 || !reflect.DeepEqual(terms[0].MatchExpressions, classReqs) {
		t.Errorf("terms %v; want one with the class's requirements", terms)
	}
	if got.Spec.CPU.CoreFraction != "50%" {
		t.Errorf("coreFraction %q; want the VM's 50%%", got.Spec.CPU.CoreFraction)
	}
	if got := Effective(plain, nil); !reflect.DeepEqual(got, plain) {
		t.Errorf("no class: %+v; want the VM as it is", got.Spec)
	}
}

func TestCPUOf(t *testing.T) {
	class := func(c v1alpha2.CPU, enabled ...string) *v1alpha2.VirtualMachineClass {
		cl := &v1alpha2.VirtualMachineClass{Spec: v1alpha2.VirtualMachineClassSpec{CPU: c}}
		cl.Name = "c"
		cl.Status.CPUFeatures.Enabled = enabled
		return cl
	}
	for _, c := range []struct {
		class *v1alpha2.VirtualMachineClass
		want  CPUConfig
		args  []string
	}{
		{Generic(), CPUConfig{Model: "Nehalem"}, []string{"--cpu-model", "Nehalem"}},
		{class(v1alpha2.CPU{Type: v1alpha2.CPUTypeHost}), CPUConfig{Model: "host"}, []string{"--cpu-model", "host"}},
		{class(v1alpha2.CPU{Type: v1alpha2.CPUTypeHostPassthrough}), CPUConfig{Model: "host"}, []string{"--cpu-model", "host"}},
		{class(v1alpha2.CPU{Type: v1alpha2.CPUTypeFeatures, Features: []string{"sse4_2", "popcnt", "sse4_2"}}), CPUConfig{Model: "qemu64", Features: "popcnt,sse4_2"},
			[]string{"--cpu-model", "qemu64", "--cpu-features", "popcnt,sse4_2"}},
		{class(v1alpha2.CPU{Type: v1alpha2.CPUTypeDiscovery}, "ssse3", "aes"), CPUConfig{Model: "qemu64", Features: "aes,ssse3"},
			[]string{"--cpu-model", "qemu64", "--cpu-features", "aes,ssse3"}},
	} {
		got, err := CPUOf(c.class)
		if err != nil || got != c.want || !reflect.DeepEqual(got.LauncherArgs(), c.args) {
			t.Errorf("%+v: %+v %q, %v; want %+v %q", c.class.Spec.CPU, got, got.LauncherArgs(), err, c.want, c.args)
		}
	}
	if _, err := CPUOf(class(v1alpha2.CPU{Type: v1alpha2.CPUTypeDiscovery})); err == nil {
		t.Error("a Discovery class without features has a CPU")
	}
}

// The CPU a pod was built with reads back as the class's, so the two compare.
func TestPodCPU(t *testing.T) {
	for _, cpu := range []CPUConfig{{}, {Model: "Nehalem"}, {Model: "qemu64", Features: "aes,ssse3"}} {
		pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Args: append(append([]string{"launcher", "--vm", "v", "--cpus", "2"}, cpu.LauncherArgs()...), "--shutdown-grace", "55s"),
		}}}}
		if got := PodCPU(pod); got != cpu {
			t.Errorf("PodCPU of %q = %+v; want %+v", pod.Spec.Containers[0].Args, got, cpu)
		}
	}
	inline := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Args: []string{"--cpu-model=host"}}}}}
	if got := PodCPU(inline); got != (CPUConfig{Model: "host"}) {
		t.Errorf("--cpu-model=host: %+v", got)
	}
}
