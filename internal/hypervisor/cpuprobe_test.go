package hypervisor

import (
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestProbeCPU asks this machine's QEMU (TCG here) what it offers, and checks the answer
// against facts about x86-64 and QEMU: every x86-64 CPU has sse2, no QMP property that is
// not a CPUID flag shows, and the features can all be enabled together on BaseModel with
// enforce (ProbeCPU checks that itself; the test starts a machine again to see it).
func TestProbeCPU(t *testing.T) {
	if _, err := exec.LookPath(DefaultBinary); err != nil {
		t.Fatalf("%s not installed: %v", DefaultBinary, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	o, err := ProbeCPU(ctx, "", "tcg")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probe took %v under %s: %d features %v, %d models %v, refused %v", time.Since(start).Round(time.Millisecond), o.Accel, len(o.Features), o.Features, len(o.Models), o.Models, o.Refused)
	for _, f := range []string{"sse2", "fpu", "cx8", "lm"} {
		if !slices.Contains(o.Features, f) {
			t.Errorf("features lack %s", f)
		}
	}
	for _, f := range o.Features {
		if f == "migratable" || f == "enforce" || f == "check" || f == "pmu" || strings.HasPrefix(f, "x-") || strings.Contains(f, "_") {
			t.Errorf("feature %q is not a CPUID flag in -cpu help's spelling", f)
		}
	}
	if slices.Contains(o.Features, "vmx") {
		t.Errorf("TCG offers vmx: %v", o.Features)
	}
	if !slices.IsSorted(o.Features) || !slices.IsSorted(o.Models) {
		t.Errorf("unsorted: %v %v", o.Features, o.Models)
	}
	for _, m := range []string{"qemu64", "Nehalem"} {
		if !slices.Contains(o.Models, m) {
			t.Errorf("models lack %s: %v", m, o.Models)
		}
	}
	for _, m := range []string{"max", "base", "host", "Skylake-Server"} {
		if slices.Contains(o.Models, m) {
			t.Errorf("models hold %s: %v", m, o.Models)
		}
	}
	// The set, as a class's VM asks for it, starts a machine; one more flag TCG lacks
	// does not, and QEMU's refusal names it.
	if refused, err := refusedFlags(ctx, DefaultBinary, "tcg", o.Features); err != nil || len(refused) > 0 {
		t.Errorf("%s with the probed features: refused %v, %v", BaseModel, refused, err)
	}
	refused, err := refusedFlags(ctx, DefaultBinary, "tcg", append(slices.Clone(o.Features), "vmx"))
	if err != nil || !slices.Equal(refused, []string{"vmx"}) {
		t.Errorf("%s with vmx besides: refused %v, %v; want [vmx]", BaseModel, refused, err)
	}
}

func TestParseCPUFlags(t *testing.T) {
	help := "x86 qemu64   QEMU Virtual CPU version 2.5+\n\nRecognized CPUID flags:\n  3dnow sse4.1 sse4.2 sse2\n  sse2 tsc-deadline bad,name\n\nmore text\n  not-a-flag\n"
	got := ParseCPUFlags(help)
	want := []string{"3dnow", "sse2", "sse4.1", "sse4.2", "tsc-deadline"}
	if !slices.Equal(got, want) {
		t.Errorf("ParseCPUFlags = %v; want %v", got, want)
	}
}

func TestEnabledFlags(t *testing.T) {
	exp := json.RawMessage(`{"model":{"name":"max","props":{"sse4.2":true,"sse4_2":true,"sse4-2":true,"vmx":false,"migratable":true,"x-force-features":true,"family":15,"vendor":"AuthenticAMD","sse2":true}}}`)
	got, err := EnabledFlags(exp, []string{"sse2", "sse4.2", "vmx"})
	if err != nil || !slices.Equal(got, []string{"sse2", "sse4.2"}) {
		t.Errorf("EnabledFlags = %v, %v; want [sse2 sse4.2]", got, err)
	}
	if _, err := EnabledFlags(json.RawMessage(`{"model":{"props":{"migratable":true}}}`), []string{"sse2"}); err == nil {
		t.Error("no flag on, yet no error")
	}
}

func TestRunnableModels(t *testing.T) {
	defs := json.RawMessage(`[{"name":"max","unavailable-features":[]},{"name":"base","unavailable-features":[]},{"name":"Nehalem","unavailable-features":[]},{"name":"Skylake-Server","unavailable-features":["avx512f"]},{"name":"odd"},{"name":"qemu64","unavailable-features":[]}]`)
	got, err := RunnableModels(defs)
	if err != nil || !slices.Equal(got, []string{"Nehalem", "qemu64"}) {
		t.Errorf("RunnableModels = %v, %v; want [Nehalem qemu64]", got, err)
	}
}

func TestRefusedFeatures(t *testing.T) {
	out := "qemu-system-x86_64: warning: TCG doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]\n" +
		"qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.80000001H:ECX.sse4a [bit 6]\n" +
		"qemu-system-x86_64: warning: host doesn't support requested feature: MSR(10AH).rdctl-no [bit 0]\n" +
		"qemu-system-x86_64: warning: TCG doesn't support requested feature: CPUID.07H:EBX [bit 3]\n" +
		"qemu-system-x86_64: TCG doesn't support requested features\n"
	got := RefusedFeatures(out)
	if want := []string{"rdctl-no", "sse4a", "vmx"}; !slices.Equal(got, want) {
		t.Errorf("RefusedFeatures = %v; want %v", got, want)
	}
}
