package hypervisor

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCPUArg(t *testing.T) {
	for _, c := range []struct {
		cpu        CPU
		accel      string
		want, note string
	}{
		{CPU{}, "tcg", "", ""},
		{CPU{Model: "Nehalem"}, "tcg", "Nehalem,enforce", ""},
		{CPU{Model: "Nehalem"}, "kvm", "Nehalem,enforce", ""},
		{CPU{Model: BaseModel, Features: []string{"popcnt", "sse4_2"}}, "kvm", "qemu64,+popcnt,+sse4_2,enforce", ""},
		{CPU{Model: HostModel}, "kvm", "host", ""},
		{CPU{Model: HostModel}, "tcg", "max", "CPU host needs KVM: running QEMU's max model under tcg"},
	} {
		arg, note := cpuArg(c.cpu, c.accel)
		if arg != c.want || note != c.note {
			t.Errorf("cpuArg(%+v, %s) = %q, %q; want %q, %q", c.cpu, c.accel, arg, note, c.want, c.note)
		}
	}
}

// The class's CPU reaches QEMU's command line as one -cpu option.
func TestBuildArgsCarryTheCPU(t *testing.T) {
	cpu, err := ParseCPU("qemu64", "sse4_2,popcnt")
	if err != nil {
		t.Fatal(err)
	}
	args := buildArgs(Config{RunDir: t.TempDir(), CPUs: 2, MemoryKiB: 131064, CPU: cpu}, "tcg")
	i := slices.Index(args, "-cpu")
	if i < 0 || args[i+1] != "qemu64,+sse4_2,+popcnt,enforce" {
		t.Fatalf("args %q lack -cpu qemu64,+sse4_2,+popcnt,enforce", args)
	}
	if n := strings.Count(strings.Join(args, " "), "-cpu "); n != 1 {
		t.Errorf("%d -cpu options", n)
	}
	if args := buildArgs(Config{RunDir: t.TempDir()}, "tcg"); slices.Contains(args, "-cpu") {
		t.Errorf("no CPU asked, yet -cpu: %q", args)
	}
}

func TestParseCPURefusesWhatIsNotAName(t *testing.T) {
	for _, c := range [][2]string{
		{"Nehalem,+vmx", ""}, {"-Nehalem", ""}, {"Nehalem", "sse2,+vmx"}, {"Nehalem", "sse2,"},
		{"Nehalem", "sse2=on"}, {"", "sse2"}, {"host,migratable=off", ""}, {strings.Repeat("a", 65), ""},
	} {
		if cpu, err := ParseCPU(c[0], c[1]); err == nil {
			t.Errorf("ParseCPU(%q, %q) = %+v; want an error", c[0], c[1], cpu)
		}
	}
	for _, c := range [][2]string{{"", ""}, {"Skylake-Client-noTSX-IBRS", ""}, {"qemu64", "sse4.2,sse4_2,tsc-deadline"}, {"host", ""}} {
		if _, err := ParseCPU(c[0], c[1]); err != nil {
			t.Errorf("ParseCPU(%q, %q): %v", c[0], c[1], err)
		}
	}
}

// Under TCG (no KVM), the generic class's Nehalem runs; a model TCG cannot give in full is
// refused by QEMU with the features it lacks; the node's CPU runs as max, and says so.
func TestClassCPUsUnderTCG(t *testing.T) {
	img := guestImage(t)
	start := func(cpu CPU) (*Instance, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return Start(ctx, Config{Name: "cpu", MemoryKiB: 131064, Accel: "tcg", CPU: cpu,
			Disks: []Disk{{Path: img, Format: "raw", ReadOnly: true}}, RunDir: t.TempDir()})
	}
	for _, cpu := range []CPU{{Model: "Nehalem"}, {Model: BaseModel, Features: []string{"sse4_2", "popcnt"}}, {Model: HostModel}} {
		inst, err := start(cpu)
		if err != nil {
			t.Errorf("CPU %+v under TCG: %v", cpu, err)
			continue
		}
		want, _ := cpuArg(cpu, "tcg")
		if i := slices.Index(inst.Args(), "-cpu"); i < 0 || inst.Args()[i+1] != want {
			t.Errorf("CPU %+v: QEMU runs with %q; want -cpu %s", cpu, inst.Args(), want)
		}
		if cpu.Model == HostModel && !strings.Contains(inst.CPUNote(), "max") {
			t.Errorf("host under TCG: note %q does not say it runs as max", inst.CPUNote())
		}
		inst.Kill()
		inst.Wait()
	}
	// IvyBridge has x2apic and tsc-deadline, which TCG (QEMU 7.2) does not emulate.
	if inst, err := start(CPU{Model: "IvyBridge"}); err == nil {
		inst.Kill()
		inst.Wait()
		t.Errorf("IvyBridge,enforce started under TCG; want QEMU to refuse the features it lacks")
	} else if !strings.Contains(err.Error(), "TCG doesn't support requested feature") {
		t.Errorf("IvyBridge under TCG: %v; want QEMU's list of missing features", err)
	}
}

// FuzzParseCPU: whatever the pod's arguments say, what reaches -cpu is one option value: a
// model name and +features, none of which can add a QEMU property of its own.
func FuzzParseCPU(f *testing.F) {
	for _, s := range [][2]string{{"Nehalem", ""}, {"qemu64", "sse4_2,popcnt"}, {"host", ""}, {"a,b", "c=d"}, {"", "x"}, {"max", "+vmx"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, model, features string) {
		cpu, err := ParseCPU(model, features)
		if err != nil {
			return
		}
		arg, _ := cpuArg(cpu, "kvm")
		if strings.ContainsAny(arg, "= \n") {
			t.Fatalf("-cpu %q from %q, %q", arg, model, features)
		}
		parts := strings.Split(arg, ",")
		if arg == "" || arg == HostModel {
			return
		}
		if parts[0] != model || parts[len(parts)-1] != "enforce" || len(parts) != len(cpu.Features)+2 {
			t.Fatalf("-cpu %q from %q, %q", arg, model, features)
		}
		for _, p := range parts[1 : len(parts)-1] {
			if !strings.HasPrefix(p, "+") || !cpuName.MatchString(p[1:]) {
				t.Fatalf("-cpu %q: part %q from %q", arg, p, features)
			}
		}
	})
}

// A class may name a flag as libvirt or older QEMU spell it; the node's label has -cpu
// help's name (checked against QEMU's own aliases with this machine's QEMU by hand:
// query-cpu-model-expansion of 486 with each alias on turns the canonical flag on).
func TestCanonicalCPUFeature(t *testing.T) {
	for in, want := range map[string]string{
		"sse4_2": "sse4.2", "sse4-1": "sse4.1", "sse4.2": "sse4.2", "lahf_lm": "lahf-lm", "pclmuldq": "pclmulqdq",
		"sse3": "pni", "tsc_adjust": "tsc-adjust", "xd": "nx", "i64": "lm", "ffxsr": "fxsr-opt", "fxsr_opt": "fxsr-opt", "avx": "avx",
	} {
		if got := CanonicalCPUFeature(in); got != want {
			t.Errorf("CanonicalCPUFeature(%q) = %q; want %q", in, got, want)
		}
	}
}
