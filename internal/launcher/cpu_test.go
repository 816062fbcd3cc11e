package launcher

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// The class's CPU reaches QEMU through the launcher's flags: a model the accelerator cannot
// give in full ends the launcher before the guest runs, and the pod's termination message
// (what the VM's Running condition quotes) names the features QEMU lacks; a name that is not
// a QEMU CPU name never reaches QEMU.
func TestRunRefusesACPUTheNodeCannotGive(t *testing.T) {
	img := guestImage(t)
	t.Setenv("FERRY_QEMU_ACCEL", "tcg")
	for _, c := range []struct{ model, features, want string }{
		// IvyBridge has x2apic and tsc-deadline, which TCG (QEMU 7.2) does not emulate.
		{"IvyBridge", "", "TCG doesn't support requested feature"},
		{"qemu64", "sse2,+vmx", `"+vmx" is not a CPU feature name`},
		{"Nehalem,+vmx", "", "is not a QEMU CPU model name"},
	} {
		runDir := t.TempDir()
		o := Options{VMName: "cpu", Disks: []string{img + ":raw:ro"}, RunDir: runDir, CPUModel: c.model, CPUFeatures: c.features}
		code := startRun(context.Background(), o).wait(t, 60e9)
		msg := TerminationMessage(runDir)
		if code != ExitNoStart || !strings.Contains(msg, c.want) {
			t.Errorf("CPU %q %q: exit %d, termination message %q; want %d and %q", c.model, c.features, code, msg, ExitNoStart, c.want)
		}
	}
}

// What the node's agent labels its Node with is what a Discovery or Features class may ask:
// the test guest boots (heartbeats) on qemu64 with every feature the probe found, enforced,
// under TCG, and QEMU's command line carries them.
func TestRunBootsWithTheProbedFeatures(t *testing.T) {
	img := guestImage(t)
	t.Setenv("FERRY_QEMU_ACCEL", "tcg")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	probeCtx, stop := context.WithTimeout(ctx, time.Minute)
	offer, err := hypervisor.ProbeCPU(probeCtx, "", "")
	stop()
	if err != nil {
		t.Fatal(err)
	}
	features := strings.Join(offer.Features, ",")
	runDir := t.TempDir()
	r := startRun(ctx, Options{VMName: "cpu", Namespace: "default", CPUs: 1, Memory: "128Mi", RunDir: runDir,
		Disks: []string{overlay(t, img) + ":qcow2"}, CPUModel: hypervisor.BaseModel, CPUFeatures: features})
	st := pollStatus(t, r, runDir, 90*time.Second, "heartbeat >= 2 with the probed features", func(s Status) bool { return s.Heartbeat >= 2 })
	if cmd := qemuCmdline(t, st.PID); !strings.Contains(cmd, "-cpu "+hypervisor.BaseModel+",+"+strings.Join(offer.Features, ",+")+",enforce") {
		t.Errorf("QEMU's command line lacks the %d probed features on %s with enforce: %s", len(offer.Features), hypervisor.BaseModel, cmd)
	}
	t.Logf("booted on %s with %d features: %s", hypervisor.BaseModel, len(offer.Features), features)
	cancel()
	if code := r.wait(t, 60*time.Second); code != ExitStopped {
		t.Fatalf("exit code %d; log:\n%s", code, r.log)
	}
}
