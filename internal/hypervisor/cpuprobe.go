package hypervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// CPUOffer is what a node's QEMU can give a guest under the node's accelerator: the CPUID
// flags it can enable on BaseModel with enforce, and the named models it runs with every
// feature of theirs.
type CPUOffer struct {
	Accel string
	// Features are CPUID flags in the spelling `-cpu help` lists them under "Recognized
	// CPUID flags" (sse4.2, lahf-lm: one name per flag, though QEMU accepts aliases such as
	// sse4_2), sorted.
	Features []string
	// Models are QEMU's named CPU models (`-cpu help`) the accelerator runs fully, sorted;
	// the pseudo-models host, max and base are left out.
	Models []string
	// Refused are flags the accelerator's own CPU has that QEMU nevertheless refused on
	// BaseModel with enforce; they are not in Features.
	Refused []string
}

// ResolveAccel is the accelerator Start uses for accel ("" = auto: $FERRY_QEMU_ACCEL if
// set, else kvm when KVMUsable, else tcg).
func ResolveAccel(accel string) string {
	if accel == "" {
		accel = os.Getenv("FERRY_QEMU_ACCEL")
	}
	if accel == "" {
		accel = "tcg"
		if KVMUsable() {
			accel = "kvm"
		}
	}
	return accel
}

// ProbeCPU asks binary (DefaultBinary when "") what it offers a guest under accel (see
// ResolveAccel). It runs QEMU three times, without a guest: `-cpu help` for the names of
// CPUID flags; a machine-less QEMU whose QMP expands the accelerator's fullest model (host
// under KVM, max under TCG) and lists the models it can run; and a stopped (-S) machine
// with BaseModel, every flag found, and enforce, which proves they can all be enabled
// together: flags QEMU refuses there are moved to Refused.
func ProbeCPU(ctx context.Context, binary, accel string) (CPUOffer, error) {
	if binary == "" {
		binary = DefaultBinary
	}
	bin, err := exec.LookPath(binary)
	if err != nil {
		return CPUOffer{}, fmt.Errorf("cpu probe: %s not found: %w", binary, err)
	}
	o := CPUOffer{Accel: ResolveAccel(accel)}
	help, err := exec.CommandContext(ctx, bin, "-cpu", "help").Output()
	if err != nil {
		return o, fmt.Errorf("cpu probe: %s -cpu help: %w", bin, err)
	}
	flags := ParseCPUFlags(string(help))
	if len(flags) == 0 {
		return o, fmt.Errorf("cpu probe: %s -cpu help lists no CPUID flags", bin)
	}
	fullest := TCGHostModel
	if o.Accel == "kvm" {
		fullest = HostModel
	}
	var expansion, definitions json.RawMessage
	err = withProbeQMP(ctx, bin, []string{"-machine", "none", "-accel", o.Accel}, func(q *QMPClient) error {
		if err := q.Execute(ctx, "query-cpu-model-expansion", map[string]any{"type": "full", "model": map[string]any{"name": fullest}}, &expansion); err != nil {
			return err
		}
		return q.Execute(ctx, "query-cpu-definitions", nil, &definitions)
	})
	if err != nil {
		return o, fmt.Errorf("cpu probe: %w", err)
	}
	if o.Features, err = EnabledFlags(expansion, flags); err != nil {
		return o, fmt.Errorf("cpu probe: %w", err)
	}
	if o.Models, err = RunnableModels(definitions); err != nil {
		return o, fmt.Errorf("cpu probe: %w", err)
	}
	// What the model has is not always what BaseModel can be given: check them together,
	// the way a class's VM will ask for them (cpuArg), and leave out what QEMU refuses.
	for range 3 {
		refused, err := refusedFlags(ctx, bin, o.Accel, o.Features)
		if err != nil {
			return o, fmt.Errorf("cpu probe: %w", err)
		}
		if len(refused) == 0 {
			return o, nil
		}
		o.Refused = append(o.Refused, refused...)
		o.Features = slices.DeleteFunc(o.Features, func(f string) bool { return slices.Contains(refused, f) })
	}
	return o, fmt.Errorf("cpu probe: QEMU still refuses %s with features %s", BaseModel, strings.Join(o.Features, ","))
}

// withProbeQMP runs QEMU with args and no guest, hands its QMP monitor to fn, and stops it.
func withProbeQMP(ctx context.Context, bin string, args []string, fn func(*QMPClient) error) error {
	dir, err := os.MkdirTemp("", "ferry-cpu-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "qmp.sock")
	args = append(args, "-nodefaults", "-display", "none", "-qmp", "unix:"+qemuEscape(sock)+",server=on,wait=off")
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	var q *QMPClient
	for q == nil {
		c, err := DialQMP(ctx, sock, nil)
		if err == nil {
			q = c
			break
		}
		select {
		case werr := <-exited:
			exited <- werr
			return fmt.Errorf("qemu %s exited: %v: %s", strings.Join(args, " "), werr, strings.TrimSpace(stderr.String()))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	defer q.Close()
	return fn(q)
}

// refusedFlags starts a stopped machine with BaseModel, features and enforce under accel and
// returns the flags QEMU refuses (none when it starts).
func refusedFlags(ctx context.Context, bin, accel string, features []string) ([]string, error) {
	cpu, _ := cpuArg(CPU{Model: BaseModel, Features: features}, accel)
	args := []string{"-machine", "pc", "-accel", accel, "-cpu", cpu, "-m", "16", "-S"}
	err := withProbeQMP(ctx, bin, args, func(*QMPClient) error { return nil })
	if err == nil {
		return nil, nil
	}
	refused := RefusedFeatures(err.Error())
	if len(refused) == 0 {
		return nil, err
	}
	return refused, nil
}

// ParseCPUFlags reads the flag names `qemu-system-x86_64 -cpu help` prints after
// "Recognized CPUID flags:" (whitespace-separated, to the next blank line), sorted and
// without duplicates. Names that are not one word of -cpu are skipped.
func ParseCPUFlags(help string) []string {
	var out []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(help))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !in {
			in = strings.HasPrefix(strings.TrimSpace(line), "Recognized CPUID flags")
			continue
		}
		if strings.TrimSpace(line) == "" {
			break
		}
		for _, f := range strings.Fields(line) {
			if cpuName.MatchString(f) {
				out = append(out, f)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// EnabledFlags reads a query-cpu-model-expansion reply and returns its properties that
// are true and are CPUID flags (in flags, sorted): properties such as migratable, enforce,
// pmu or x-* are not flags, and of a flag's aliases (sse4.2, sse4-2, sse4_2) only the
// spelling in flags is kept.
func EnabledFlags(expansion json.RawMessage, flags []string) ([]string, error) {
	var r struct {
		Model struct {
			Props map[string]json.RawMessage `json:"props"`
		} `json:"model"`
	}
	if err := json.Unmarshal(expansion, &r); err != nil {
		return nil, fmt.Errorf("query-cpu-model-expansion: %w", err)
	}
	var out []string
	for k, v := range r.Model.Props {
		var on bool
		if json.Unmarshal(v, &on) == nil && on {
			if _, ok := slices.BinarySearch(flags, k); ok {
				out = append(out, k)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("query-cpu-model-expansion: the model has no CPUID flag on")
	}
	slices.Sort(out)
	return out, nil
}

// RunnableModels reads a query-cpu-definitions reply: the models with no unavailable
// feature, less host, max and base, sorted. A model whose name is not one word of -cpu is
// left out.
func RunnableModels(definitions json.RawMessage) ([]string, error) {
	var defs []struct {
		Name        string   `json:"name"`
		Unavailable []string `json:"unavailable-features"`
	}
	if err := json.Unmarshal(definitions, &defs); err != nil {
		return nil, fmt.Errorf("query-cpu-definitions: %w", err)
	}
	var out []string
	for _, d := range defs {
		// A missing unavailable-features means QEMU cannot tell: not known to run.
		if d.Unavailable == nil || len(d.Unavailable) > 0 || !cpuName.MatchString(d.Name) {
			continue
		}
		switch d.Name {
		case HostModel, TCGHostModel, "base":
			continue
		}
		out = append(out, d.Name)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// refusal is QEMU's warning under enforce for a flag the accelerator lacks, e.g.
// "warning: TCG doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]" or
// "host doesn't support requested feature: MSR(10AH).rdctl-no [bit 0]".
var refusal = regexp.MustCompile(`support requested feature: (?:CPUID\.[0-9A-Fa-f]+H:[A-Z]{3}|MSR\([0-9A-Fa-f]+H\))\.([A-Za-z0-9_.-]+) \[bit`)

// RefusedFeatures reads the flags QEMU's enforce warnings name in its output, sorted.
func RefusedFeatures(stderr string) []string {
	var out []string
	for _, m := range refusal.FindAllStringSubmatch(stderr, -1) {
		if cpuName.MatchString(m[1]) {
			out = append(out, m[1])
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
