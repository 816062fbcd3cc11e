package hypervisor

import (
	"fmt"
	"regexp"
	"strings"
)

// QEMU CPU models with a meaning of their own to Ferry.
const (
	// HostModel is the node's own CPU (-cpu host); it needs KVM.
	HostModel = "host"
	// TCGHostModel is what a VM asking for HostModel runs under TCG: QEMU's "max", every
	// feature TCG emulates, the nearest TCG has to "the node's CPU".
	TCGHostModel = "max"
	// BaseModel is the model under a class's required features (Features, Discovery), as
	// Deckhouse's qemu64.
	BaseModel = "qemu64"
)

// CPU is the guest's processor (-cpu). The zero CPU leaves QEMU's default (qemu64).
type CPU struct {
	// Model is a QEMU CPU model (`qemu-system-x86_64 -cpu help`) or HostModel.
	Model string
	// Features are required on top of the model.
	Features []string
}

// cpuName is one word of QEMU's -cpu option: a model or a feature name (Nehalem,
// Skylake-Client-noTSX-IBRS, sse4.2, sse4_2, tsc-deadline). Nothing that would end the
// word (a comma) or change its meaning (=, +, -) at its start.
var cpuName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ParseCPU reads the launcher's --cpu-model and --cpu-features (comma-separated) values.
// They come from the launcher pod, written by the controller from a class; a name that is
// not one word of -cpu is refused rather than passed to QEMU.
func ParseCPU(model, features string) (CPU, error) {
	var c CPU
	if model == "" {
		if features != "" {
			return c, fmt.Errorf("cpu: features %q without a model", features)
		}
		return c, nil
	}
	if !cpuName.MatchString(model) {
		return c, fmt.Errorf("cpu: %q is not a QEMU CPU model name", model)
	}
	c.Model = model
	if features == "" {
		return c, nil
	}
	for _, f := range strings.Split(features, ",") {
		if !cpuName.MatchString(f) {
			return CPU{}, fmt.Errorf("cpu: %q is not a CPU feature name", f)
		}
		c.Features = append(c.Features, f)
	}
	return c, nil
}

// cpuArg is -cpu's value for c under accel ("" for the zero CPU), and a note for the log
// when the guest gets another CPU than asked: HostModel without KVM runs as TCGHostModel
// (QEMU refuses -cpu host under TCG). A named model or required features are enforced:
// QEMU refuses to start when the accelerator lacks a feature, rather than give the guest
// less than its class promises (libvirt's "require", which Deckhouse uses).
func cpuArg(c CPU, accel string) (arg, note string) {
	if c.Model == "" {
		return "", ""
	}
	model := c.Model
	if model == HostModel {
		if accel != "kvm" {
			return TCGHostModel, "CPU " + HostModel + " needs KVM: running QEMU's " + TCGHostModel + " model under " + accel
		}
		return HostModel, ""
	}
	var b strings.Builder
	b.WriteString(model)
	for _, f := range c.Features {
		b.WriteString(",+" + f)
	}
	b.WriteString(",enforce")
	return b.String(), ""
}

// featureAliases are QEMU's other names of CPUID flags (x86 CPU properties it registers as
// aliases), each to the name `-cpu help` lists. Names with an underscore (lahf_lm,
// sse4_2: libvirt's and older QEMU's spelling) are first written with a dash.
var featureAliases = map[string]string{
	"sse3": "pni", "pclmuldq": "pclmulqdq", "sse4-1": "sse4.1", "sse4-2": "sse4.2",
	"xd": "nx", "ffxsr": "fxsr-opt", "i64": "lm",
}

// CanonicalCPUFeature is the name `-cpu help` lists for the CPUID flag f, which QEMU also
// accepts as sse4_2, lahf_lm, pclmuldq and the like: the name Ferry's agents label nodes
// with (cpu-feature.node.virtualization.deckhouse.io/<name>).
func CanonicalCPUFeature(f string) string {
	f = strings.ReplaceAll(f, "_", "-")
	if c, ok := featureAliases[f]; ok {
		return c
	}
	return f
}
