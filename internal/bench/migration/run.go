package migration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Options configure RunMigration.
type Options struct {
	// FerryBin is the ferry binary that runs the cluster.
	FerryBin string
	// Kubeconfig points at a running cluster; empty starts `ferry up --nodes 2`.
	Kubeconfig string
	// StateDir of the started cluster (empty: a temporary one, removed unless something
	// failed), or of the cluster that Kubeconfig points at (to find its logs).
	StateDir string
	// Port of the started cluster's apiserver.
	Port      int
	Namespace string
	// VMName is the benchmark VM's name; its disk is VMName-root.
	VMName string
	// Memory of the guest, as a Kubernetes quantity.
	Memory string
	// Runs is the number of migrations per scenario and system.
	Runs int
	// DirtyMiB is how much memory the busy guest rewrites in a loop.
	DirtyMiB int
	// DirtyWarmup is how long the guest dirties before the first migration of a scenario.
	DirtyWarmup time.Duration
	// Scenarios to run: "idle", "dirty".
	Scenarios []string
	// SkipRaw skips the bare-QEMU baseline.
	SkipRaw bool
	// NoPing does not ping the VM during Ferry's migrations (no network downtime figures;
	// the guest then takes no packets, as the raw baseline's).
	NoPing bool
	// RawTLS runs the bare-QEMU baseline over TLS, as Ferry's launchers migrate by default.
	RawTLS bool
	// MigrationTimeout bounds one migration.
	MigrationTimeout time.Duration
	// WaitOther is how long to wait for another `ferry up` on this machine to end.
	WaitOther time.Duration
	// Bandwidth and DowntimeLimit are the raw baseline's parameters when no Ferry migration
	// showed the controller's (e.g. all failed).
	Bandwidth     int64
	DowntimeLimit time.Duration
	Out           io.Writer
}

// DefaultOptions are the command's defaults.
func DefaultOptions() Options {
	return Options{
		FerryBin:         "bin/ferry",
		Port:             17443,
		Namespace:        "default",
		VMName:           "bench",
		Memory:           "512Mi",
		Runs:             3,
		DirtyMiB:         256,
		DirtyWarmup:      10 * time.Second,
		Scenarios:        []string{"idle", "dirty"},
		MigrationTimeout: 5 * time.Minute,
		Bandwidth:        1 << 30,
		DowntimeLimit:    300 * time.Millisecond,
		Out:              os.Stdout,
	}
}

type scenario struct {
	name  string
	dirty int // MiB, 0 for idle
}

// MigrationResult is what RunMigration measured.
type MigrationResult struct {
	// Memory is the guest's memory as asked (a Kubernetes quantity), MemoryMiB its size.
	Memory    string
	MemoryMiB int64
	// Runs is the number of migrations asked per scenario and system.
	Runs int
	// DirtyMiB is what the busy guest rewrote (--dirty-mib fitted to the guest); 0 without
	// a dirtying scenario.
	DirtyMiB int
	// Params are the raw baseline's migration parameters: the controller's when a Ferry
	// migration showed them (ParamsFromController), else the options'.
	Params               hypervisor.MigrationParams
	ParamsFromController bool
	Scenarios            []bench.ScenarioResult
}

// fitDirty is how many MiB a guest of memMiB can rewrite: the buffer lives in the guest's
// tmpfs next to its kernel and initramfs, and the guest refuses one that would leave it
// less than 24 MiB (past that its kernel ran out of memory); half the memory, and 96 MiB
// less than it, stays clear of that limit.
func fitDirty(memMiB int64, dirty int) int {
	return max(0, min(dirty, int(min(memMiB/2, memMiB-96))))
}

// RunMigration runs the migration benchmark and prints its table to o.Out. It cleans up
// (VM, cluster, QEMU processes) also when ctx is cancelled. Once it has measured, it
// returns what it measured also with an error (the run stopped early).
func RunMigration(ctx context.Context, o Options) (res *MigrationResult, retErr error) {
	out, say := bench.Reporter(o.Out)
	if o.Runs < 1 {
		return nil, errors.New("--runs must be at least 1")
	}
	mem, err := bench.GuestMemory(o.Memory)
	if err != nil {
		return nil, err
	}
	memMiB := mem.Value() >> 20
	dirty := o.DirtyMiB
	if limit := fitDirty(memMiB, dirty); limit < dirty {
		say("Note: --dirty-mib %d does not fit a %s guest (its OOM killer would end it); dirtying %d MiB instead", dirty, o.Memory, limit)
		dirty = limit
	}
	var scenarios []scenario
	for _, s := range o.Scenarios {
		switch strings.TrimSpace(s) {
		case "idle":
			scenarios = append(scenarios, scenario{name: "idle"})
		case "dirty":
			if dirty > 0 {
				scenarios = append(scenarios, scenario{name: fmt.Sprintf("dirty-%dMiB", dirty), dirty: dirty})
			}
		default:
			return nil, fmt.Errorf("unknown scenario %q (idle, dirty)", s)
		}
	}
	if len(scenarios) == 0 {
		return nil, errors.New("no scenario to run")
	}

	// Where the cluster lives.
	failures := 0
	bin := o.FerryBin
	if o.Kubeconfig == "" {
		abs, err := filepath.Abs(o.FerryBin)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("--ferry %s: %w (run `make build`)", o.FerryBin, err)
		}
		bin = abs
	}
	cl, err := bench.OpenCluster(ctx, bin, o.Kubeconfig, o.StateDir, "fb-", o.Port, 2, o.WaitOther, say)
	if err != nil {
		return nil, err
	}
	defer func() { cl.Close(failures > 0 || retErr != nil, say) }()
	kubeconfig, stateDir, logsDir := cl.Kubeconfig, cl.StateDir, cl.LogsDir
	workDir := filepath.Join(stateDir, "bench")
	if o.Kubeconfig != "" && o.StateDir == "" {
		if workDir, err = os.MkdirTemp("", "ferry-bench-raw-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(workDir)
	}

	image, c, err := bench.GuestAndClient(ctx, kubeconfig)
	if err != nil {
		return nil, err
	}
	fb := &bench.FerryVM{C: c, NS: o.Namespace, VM: o.VMName, Disk: o.VMName + "-root", LogsDir: logsDir,
		Timeout: o.MigrationTimeout, Say: say, ImageURL: "file://" + image, NoPing: o.NoPing}
	if err := fb.EnsureImage(ctx); err != nil {
		return nil, err
	}
	say("Creating VM %s/%s (%s, 1 core) from %s", o.Namespace, o.VMName, o.Memory, bench.ImageName)
	cleanupVM := func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := fb.DeleteVM(cctx); err != nil {
			say("Could not delete the benchmark VM: %v", err)
		}
	}
	vmDeleted := false
	defer func() {
		if !vmDeleted {
			say("Deleting VM %s…", o.VMName)
			cleanupVM()
		}
	}()
	if err := fb.CreateVM(ctx, mem, v1alpha2.AlwaysOnUnlessStoppedManually); err != nil {
		return nil, err
	}
	t := time.Now()
	p, err := fb.WaitReady(ctx, 5*time.Minute)
	if err != nil {
		return nil, err
	}
	say("VM running on %s (pod %s) with a heartbeat after %.1fs", p.Node, p.Pod, time.Since(t).Seconds())

	// Each scenario's runs interleave, Ferry then raw, so that whatever else loads the
	// machine loads both alike; both guests live through the scenario (idle, or both
	// dirtying). The raw baseline migrates with what Ferry's controller asked for, known
	// after the first Ferry migration.
	results := make([]bench.ScenarioResult, len(scenarios))
	for i, sc := range scenarios {
		results[i].Name = sc.name
	}
	var runErr error
	params := hypervisor.MigrationParams{MaxBandwidth: o.Bandwidth, DowntimeLimit: o.DowntimeLimit}
	for i, sc := range scenarios {
		if runErr != nil {
			results[i].Ferry.Skipped, results[i].Raw.Skipped = true, true
			continue
		}
		fr := &ferryRunner{fb: fb, sc: sc, o: o, series: &results[i].Ferry, say: say}
		var rb *rawBench
		for run := range o.Runs {
			if runErr = fr.step(ctx, run); runErr != nil {
				break
			}
			if o.SkipRaw {
				continue
			}
			if rb == nil {
				if fb.Params != nil {
					params = hypervisor.MigrationParams{MaxBandwidth: fb.Params.MaxBandwidthBytes,
						DowntimeLimit: time.Duration(fb.Params.DowntimeLimitMs) * time.Millisecond, AutoConverge: fb.Params.AutoConverge}
				}
				say("[raw %s] bare QEMU, %d MiB/s, downtime limit %s, auto-converge %v, TLS %v", sc.name, params.MaxBandwidth>>20, params.DowntimeLimit, params.AutoConverge, o.RawTLS)
				rb = &rawBench{image: image, dir: filepath.Join(workDir, "raw-"+sc.name), memKiB: hypervisor.SafeMemoryKiB(mem.Value() >> 10),
					params: params, tls: o.RawTLS, timeout: o.MigrationTimeout, say: say}
				if runErr = rb.setup(ctx); runErr != nil {
					break
				}
			}
			var s bench.Sample
			s, runErr = rb.step(ctx, sc.dirty, o.DirtyWarmup)
			if runErr != nil {
				break
			}
			results[i].Raw.Samples = append(results[i].Raw.Samples, s)
			bench.SaySample(say, "raw "+sc.name, run, o.Runs, s)
		}
		if rb != nil {
			rb.close()
		} else if o.SkipRaw {
			results[i].Raw.Skipped = true
		}
		if err := fr.finish(ctx); err != nil && runErr == nil {
			say("[ferry %s] could not stop the dirtying: %v", sc.name, err)
		}
	}
	if fb.Params != nil {
		say("Ferry's controller asked for: bandwidth %d MiB/s, downtime limit %d ms, auto-converge %v", fb.Params.MaxBandwidthBytes>>20, fb.Params.DowntimeLimitMs, fb.Params.AutoConverge)
	}
	say("Deleting VM %s…", o.VMName)
	cleanupVM()
	vmDeleted = true

	res = &MigrationResult{Memory: o.Memory, MemoryMiB: memMiB, Runs: o.Runs, Params: params, ParamsFromController: fb.Params != nil, Scenarios: results}
	for _, sc := range scenarios {
		res.DirtyMiB = max(res.DirtyMiB, sc.dirty)
	}
	rawTLS := ""
	if o.RawTLS {
		rawTLS = " over TLS"
	}
	fmt.Fprintf(out, "\nMigration benchmark: %s guest, %d run(s) per scenario, Ferry = Evict operations on `ferry up --nodes 2`, raw = bare QEMU on loopback%s, runs interleaved (Ferry, raw, …). Times in ms.\n\n", o.Memory, o.Runs, rawTLS)
	if err := table(out, results); err != nil {
		return res, err
	}
	bench.TimelineTable(out, results)
	var details []string
	for _, r := range results {
		for _, sys := range []struct {
			name string
			s    bench.Series
		}{{"ferry", r.Ferry}, {"raw", r.Raw}} {
			for i, s := range sys.s.Samples {
				if s.Outcome != bench.OK {
					failures++
					details = append(details, fmt.Sprintf("%s %s #%d: %s: %s", sys.name, r.Name, i+1, s.Outcome, s.Detail))
				}
			}
		}
	}
	if len(details) > 0 {
		fmt.Fprintf(out, "\nFailures:\n%s\n", strings.Join(details, "\n"))
	}
	if runErr != nil {
		if ctx.Err() != nil {
			return res, fmt.Errorf("interrupted; the table shows what was measured")
		}
		return res, fmt.Errorf("benchmark stopped early: %w", runErr)
	}
	return res, nil
}

// ferryRunner runs one scenario's Evict operations of the benchmark VM, one step at a time.
type ferryRunner struct {
	fb       *bench.FerryVM
	sc       scenario
	o        Options
	series   *bench.Series
	say      func(string, ...any)
	dirtying bool
}

// step migrates the VM once (run of o.Runs), first starting the guest's dirtying (and
// waiting o.DirtyWarmup) in a dirtying scenario.
func (f *ferryRunner) step(ctx context.Context, run int) error {
	if f.sc.dirty > 0 && !f.dirtying {
		p, err := f.fb.WaitReady(ctx, 3*time.Minute)
		if err != nil {
			return err
		}
		n := fmt.Sprint(f.sc.dirty)
		if err := bench.TypeLine(ctx, p.RunDir, "dirty "+n, "DIRTY "+n+" STARTED"); err != nil {
			return err
		}
		f.say("[ferry %s] guest dirtying %s MiB; warming up %s", f.sc.name, n, f.o.DirtyWarmup)
		if err := bench.Sleep(ctx, f.o.DirtyWarmup); err != nil {
			return err
		}
		f.dirtying = true
	}
	s, _, err := f.fb.Migrate(ctx)
	if err != nil {
		return err
	}
	if s.Outcome == bench.PostFailure {
		f.dirtying = false // the guest may have rebooted; type dirty again
	}
	f.series.Samples = append(f.series.Samples, s)
	bench.SaySample(f.say, "ferry "+f.sc.name, run, f.o.Runs, s)
	return nil
}

// finish stops the guest's dirtying.
func (f *ferryRunner) finish(ctx context.Context) error {
	if f.sc.dirty == 0 {
		return nil
	}
	p, err := f.fb.WaitReady(ctx, 3*time.Minute)
	if err != nil {
		return err
	}
	return bench.TypeLine(ctx, p.RunDir, "stop", "DIRTY STOPPED")
}
