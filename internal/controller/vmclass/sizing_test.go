package vmclass

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func q(s string) *resource.Quantity { v := resource.MustParse(s); return &v }

// sized is a class with the guide's example policies.
func sized() *v1alpha2.VirtualMachineClass {
	return &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{Name: "standard"}, Spec: v1alpha2.VirtualMachineClassSpec{
		SizingPolicies: []v1alpha2.SizingPolicy{
			{Cores: &v1alpha2.SizingPolicyCores{Min: 1, Max: 4}, CoreFractions: []v1alpha2.CoreFractionValue{5, 10, 20, 50, 100},
				Memory: &v1alpha2.SizingPolicyMemory{MemoryMinMax: v1alpha2.MemoryMinMax{Min: q("1Gi"), Max: q("8Gi")}, Step: q("512Mi")}},
			{Cores: &v1alpha2.SizingPolicyCores{Min: 5, Max: 8}, CoreFractions: []v1alpha2.CoreFractionValue{20, 50},
				Memory: &v1alpha2.SizingPolicyMemory{PerCore: &v1alpha2.SizingPolicyMemoryPerCore{MemoryMinMax: v1alpha2.MemoryMinMax{Min: q("1Gi"), Max: q("2Gi")}}}},
			{Cores: &v1alpha2.SizingPolicyCores{Min: 10, Max: 18, Step: 4}, DefaultCoreFraction: ptrIntOrString(50), CoreFractions: []v1alpha2.CoreFractionValue{50, 100}},
		},
	}}
}

func ptrIntOrString(v int) *intstr.IntOrString { x := intstr.FromInt32(int32(v)); return &x }

func TestSizing(t *testing.T) {
	for _, c := range []struct {
		cores    int
		fraction string
		memory   string
		want     []string // parts of the refusal; none: allowed
	}{
		{1, "", "1Gi", nil},
		{4, "50%", "8Gi", nil},
		{2, "10%", "1536Mi", nil},
		{9, "", "1Gi", []string{`spec.cpu.cores: 9 is not allowed by VirtualMachineClass "standard"`, "allow 1-4, 5-8, 10-18 cores"}},
		{2, "30%", "1Gi", []string{"spec.cpu.coreFraction: 30% is not allowed", "for 1-4 cores", "set one of 5%, 10%, 20%, 50%, 100%"}},
		{6, "", "6Gi", []string{"spec.cpu.coreFraction: not set, which means 100%,", "set one of 20%, 50%"}},
		{2, "", "512Mi", []string{"spec.memory.size: 512Mi is not allowed", "set it between 1Gi and 8Gi"}},
		{2, "", "1300Mi", []string{"in steps of 512Mi from 1Gi; set 1Gi or 1536Mi"}},
		{6, "20%", "4Gi", []string{"spec.memory.size: 4Gi is not allowed", "for 6 cores (1Gi and 2Gi per core)", "set it between 6Gi and 12Gi"}},
		{12, "", "1Gi", []string{"spec.cpu.cores: 12 is not allowed", "10 to 18 cores in steps of 4; set 10 or 14"}},
		{14, "", "1Gi", nil}, // defaultCoreFraction 50%
		{18, "100%", "1Gi", nil},
		{2, "30%", "512Mi", []string{"coreFraction: 30%", "memory.size: 512Mi"}}, // both at once
	} {
		err := Sizing(sized(), v1alpha2.CPUSpec{Cores: c.cores, CoreFraction: c.fraction}, resource.MustParse(c.memory))
		if len(c.want) == 0 {
			if err != nil {
				t.Errorf("%d cores %q %s: %v", c.cores, c.fraction, c.memory, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%d cores %q %s allowed; want %q", c.cores, c.fraction, c.memory, c.want)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%d cores %q %s: %q lacks %q", c.cores, c.fraction, c.memory, err, w)
			}
		}
	}
	if err := Sizing(&v1alpha2.VirtualMachineClass{}, v1alpha2.CPUSpec{Cores: 64}, resource.MustParse("1Ti")); err != nil {
		t.Errorf("a class without policies refused: %v", err)
	}
}

// generic allows what Ferry's manifests ask (1 core, 10%), as Deckhouse's generic does.
func TestGenericAllowsFerrysUsualVMs(t *testing.T) {
	for _, cpu := range []v1alpha2.CPUSpec{{Cores: 1}, {Cores: 1, CoreFraction: "10%"}, {Cores: 4, CoreFraction: "5%"}, {Cores: 16, CoreFraction: "50%"}, {Cores: 64}} {
		if err := Sizing(Generic(), cpu, resource.MustParse("2Gi")); err != nil {
			t.Errorf("%+v: %v", cpu, err)
		}
	}
	if err := Sizing(Generic(), v1alpha2.CPUSpec{Cores: 6, CoreFraction: "10%"}, resource.MustParse("2Gi")); err == nil {
		t.Error("generic allows 10% of 6 cores; Deckhouse's allows 20, 50, 100")
	}
}
