package vmclass

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Sizing checks a VM's cores, memory and coreFraction against its class's sizing
// policies. nil when the class has no policy or the VM fits the one that covers its
// number of cores; otherwise an error whose message names the field, the class and the
// values that would fit. dedicatedCores is not checked: Ferry's VMs have no such field.
func Sizing(class *v1alpha2.VirtualMachineClass, cpu v1alpha2.CPUSpec, memory resource.Quantity) error {
	if class == nil || len(class.Spec.SizingPolicies) == 0 {
		return nil
	}
	p := policyFor(class, cpu.Cores)
	if p == nil {
		return fmt.Errorf("spec.cpu.cores: %d is not allowed by VirtualMachineClass %q, whose sizing policies allow %s cores; set spec.cpu.cores to one of those or choose another class",
			cpu.Cores, class.Name, coreRanges(class))
	}
	span := fmt.Sprintf("%d-%d cores", p.Cores.Min, p.Cores.Max)
	var errs []error
	if err := checkCoreStep(class.Name, p, cpu.Cores); err != nil {
		errs = append(errs, err)
	}
	if err := checkCoreFraction(class.Name, span, p, cpu.CoreFraction); err != nil {
		errs = append(errs, err)
	}
	if err := checkMemory(class.Name, span, p, cpu.Cores, memory); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// policyFor is the policy whose cores range holds cores (the ranges do not overlap: CEL).
func policyFor(class *v1alpha2.VirtualMachineClass, cores int) *v1alpha2.SizingPolicy {
	for i := range class.Spec.SizingPolicies {
		p := &class.Spec.SizingPolicies[i]
		if p.Cores != nil && cores >= p.Cores.Min && cores <= p.Cores.Max {
			return p
		}
	}
	return nil
}

func coreRanges(class *v1alpha2.VirtualMachineClass) string {
	var r []string
	for _, p := range class.Spec.SizingPolicies {
		if p.Cores != nil {
			r = append(r, fmt.Sprintf("%d-%d", p.Cores.Min, p.Cores.Max))
		}
	}
	return strings.Join(r, ", ")
}

// checkCoreStep: with a step, cores must be min, min+step, ... or max.
func checkCoreStep(class string, p *v1alpha2.SizingPolicy, cores int) error {
	c := p.Cores
	if c.Step <= 0 || cores == c.Max || (cores-c.Min)%c.Step == 0 {
		return nil
	}
	below := c.Min + (cores-c.Min)/c.Step*c.Step
	above := min(below+c.Step, c.Max)
	return fmt.Errorf("spec.cpu.cores: %d is not allowed by VirtualMachineClass %q, which allows %d to %d cores in steps of %d; set %d or %d",
		cores, class, c.Min, c.Max, c.Step, below, above)
}

// DefaultCoreFraction is the coreFraction a VM that sets none runs with under policy p
// (nil: no policy): the policy's defaultCoreFraction, else 100%.
func DefaultCoreFraction(p *v1alpha2.SizingPolicy) int {
	if p != nil && p.DefaultCoreFraction != nil && p.DefaultCoreFraction.Type == 0 {
		if v := p.DefaultCoreFraction.IntValue(); v >= 1 && v <= 100 {
			return v
		}
	}
	return 100
}

func checkCoreFraction(class, span string, p *v1alpha2.SizingPolicy, set string) error {
	if len(p.CoreFractions) == 0 {
		return nil
	}
	fraction, given := DefaultCoreFraction(p), "not set, which means "+strconv.Itoa(DefaultCoreFraction(p))+"%,"
	if set != "" {
		v, err := strconv.Atoi(strings.TrimSuffix(set, "%"))
		if err != nil {
			return fmt.Errorf("spec.cpu.coreFraction: %q is not a percentage such as 50%%", set)
		}
		fraction, given = v, set
	}
	allowed := make([]string, len(p.CoreFractions))
	for i, f := range p.CoreFractions {
		if int(f) == fraction {
			return nil
		}
		allowed[i] = strconv.Itoa(int(f)) + "%"
	}
	return fmt.Errorf("spec.cpu.coreFraction: %s is not allowed by VirtualMachineClass %q for %s; set one of %s",
		given, class, span, strings.Join(allowed, ", "))
}

// checkMemory checks the memory range, fixed or per core (times the cores), and its step,
// which counts from the range's minimum (or from 0).
func checkMemory(class, span string, p *v1alpha2.SizingPolicy, cores int, size resource.Quantity) error {
	m := p.Memory
	if m == nil {
		return nil
	}
	var lo, hi int64 // bytes; 0: no bound
	what := "for " + span
	if m.Min != nil {
		lo = m.Min.Value()
	}
	if m.Max != nil {
		hi = m.Max.Value()
	}
	if pc := m.PerCore; pc != nil && (pc.Min != nil || pc.Max != nil) {
		lo, hi, what = 0, 0, fmt.Sprintf("for %d cores (%s per core)", cores, perCoreText(pc))
		if pc.Min != nil {
			lo = pc.Min.Value() * int64(cores)
		}
		if pc.Max != nil {
			hi = pc.Max.Value() * int64(cores)
		}
	}
	v := size.Value()
	if (lo > 0 && v < lo) || (hi > 0 && v > hi) {
		return fmt.Errorf("spec.memory.size: %s is not allowed by VirtualMachineClass %q %s; set it %s",
			size.String(), class, what, rangeText(lo, hi))
	}
	if m.Step == nil || m.Step.Value() <= 0 {
		return nil
	}
	step := m.Step.Value()
	if (v-lo)%step == 0 {
		return nil
	}
	below := lo + (v-lo)/step*step
	above := below + step
	if hi > 0 {
		above = min(above, hi)
	}
	return fmt.Errorf("spec.memory.size: %s is not allowed by VirtualMachineClass %q %s, whose memory goes in steps of %s from %s; set %s or %s",
		size.String(), class, what, m.Step.String(), quantity(lo), quantity(below), quantity(above))
}

func perCoreText(pc *v1alpha2.SizingPolicyMemoryPerCore) string {
	var lo, hi int64
	if pc.Min != nil {
		lo = pc.Min.Value()
	}
	if pc.Max != nil {
		hi = pc.Max.Value()
	}
	return strings.TrimPrefix(rangeText(lo, hi), "between ")
}

func rangeText(lo, hi int64) string {
	switch {
	case lo > 0 && hi > 0:
		return "between " + quantity(lo) + " and " + quantity(hi)
	case lo > 0:
		return "to at least " + quantity(lo)
	default:
		return "to at most " + quantity(hi)
	}
}

// quantity renders bytes the way people write memory: 1536Mi, 2Gi.
func quantity(b int64) string {
	return resource.NewQuantity(b, resource.BinarySI).String()
}
