package report

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/bench/drain"
	"github.com/ferryvm/ferry/internal/bench/failover"
	"github.com/ferryvm/ferry/internal/bench/migration"
	"github.com/ferryvm/ferry/internal/bench/scale"
)

// The parts of a report, as --skip names them.
const (
	partMigration    = "migration"
	partDrain        = "drain"
	partFailover     = "failover"
	partFalseFencing = "false-fencing"
	partScale        = "scale"
)

var reportParts = []string{partMigration, partDrain, partFailover, partFalseFencing, partScale}

// ReportOptions configure RunReport.
type ReportOptions struct {
	// Out is the markdown file; the plots go to the directory of the same name without its
	// extension (docs/benchmarks.md: docs/benchmarks/).
	Out string
	// FerryBin is the ferry binary; empty: the ferry next to the running executable, else
	// bin/ferry.
	FerryBin string
	// Skip names parts not to run: migration, drain, failover, false-fencing, scale.
	Skip []string
	// Port of the clusters' apiservers.
	Port int
	// WaitOther is how long to wait, before the first part, for another `ferry up` on this
	// machine to end.
	WaitOther time.Duration

	// MemorySizes of the migration guests, one `ferry-bench migration` each; Runs and
	// DirtyMiB are its --runs and --dirty-mib.
	MemorySizes []string
	Runs        int
	DirtyMiB    int
	// DrainVMs and DrainMemory are `ferry-bench drain`'s --vms and --memory.
	DrainVMs    int
	DrainMemory string
	// FailoverProfile, FailoverFaults and FailoverRuns are `ferry-bench failover`'s
	// --profile, --faults and --runs.
	FailoverProfile string
	FailoverFaults  []string
	FailoverRuns    int
	// FalseFencingProfiles and FalseFencingDuration are `ferry-bench false-fencing`'s
	// --profiles and --duration.
	FalseFencingProfiles []string
	FalseFencingDuration time.Duration
	// ScaleSizes are NODESxVMS_PER_NODE, one `ferry-bench scale` each; ScaleEvacuate and
	// ScaleFail its --evacuate and --fail.
	ScaleSizes    []string
	ScaleEvacuate float64
	ScaleFail     int

	// Self is how the reproducing commands call ferry-bench; Args the report's own command
	// line, as the report shows it.
	Self string
	Args []string
	// Log receives the benchmarks' own output.
	Log io.Writer
}

// DefaultReportOptions are the command's defaults: a full run.
func DefaultReportOptions() ReportOptions {
	fo, ffo, so := failover.DefaultFailoverOptions(), failover.DefaultFalseFencingOptions(), scale.DefaultScaleOptions()
	return ReportOptions{
		Out:                  "docs/benchmarks.md",
		Port:                 17443,
		MemorySizes:          []string{"128Mi", "256Mi", "512Mi"},
		Runs:                 5,
		DirtyMiB:             32, // fits a 128Mi guest, so every size dirties the same
		DrainVMs:             3,
		DrainMemory:          "128Mi",
		FailoverProfile:      fo.Profile,
		FailoverFaults:       fo.Faults,
		FailoverRuns:         3,
		FalseFencingProfiles: ffo.Profiles,
		FalseFencingDuration: time.Minute,
		ScaleSizes:           []string{"10x10", "25x10", "50x10"},
		ScaleEvacuate:        so.Evacuate,
		ScaleFail:            so.Fail,
		Self:                 "bin/ferry-bench",
		Log:                  os.Stdout,
	}
}

// Report is what one `ferry-bench report` measured, and how.
type Report struct {
	Date    time.Time
	Elapsed time.Duration
	// Command is the report's own command line.
	Command string
	Machine Machine

	Migration    []MigrationPart
	Drain        DrainPart
	Failover     FailoverPart
	FalseFencing FalseFencingPart
	Scale        []ScalePart

	// PlotsDir is where the plots are, relative to the markdown file; Plots what
	// WritePlots drew there (or could not).
	PlotsDir string
	Plots    []Plot
}

// Part is one benchmark run of a report.
type Part struct {
	// Command runs the benchmark on its own, with the same parameters.
	Command string
	// Skipped says why the part did not run; Err why it failed or stopped early (what it
	// measured until then, if anything, is in the part's Result).
	Skipped, Err string
	Elapsed      time.Duration
}

// MigrationPart is one `ferry-bench migration` of a report.
type MigrationPart struct {
	Part
	Memory string
	Result *migration.MigrationResult
}

// DrainPart is the report's `ferry-bench drain`.
type DrainPart struct {
	Part
	VMs    int
	Memory string
	Result *drain.DrainResult
}

// FailoverPart is the report's `ferry-bench failover`.
type FailoverPart struct {
	Part
	Memory string
	Result *failover.FailoverReport
}

// FalseFencingPart is the report's `ferry-bench false-fencing`.
type FalseFencingPart struct {
	Part
	Result *failover.FalseFencingReport
}

// ScalePart is one `ferry-bench scale` of a report.
type ScalePart struct {
	Part
	Nodes, VMsPerNode int
	Result            *scale.ScaleResult
}

// Failed counts the parts that failed.
func (r Report) Failed() int {
	n := 0
	for _, p := range r.parts() {
		if p.Err != "" {
			n++
		}
	}
	return n
}

func (r *Report) parts() []*Part {
	var out []*Part
	for i := range r.Migration {
		out = append(out, &r.Migration[i].Part)
	}
	out = append(out, &r.Drain.Part, &r.Failover.Part, &r.FalseFencing.Part)
	for i := range r.Scale {
		out = append(out, &r.Scale[i].Part)
	}
	return out
}

// reportStep is one benchmark to run.
type reportStep struct {
	kind, name string
	part       *Part
	run        func(context.Context) error
}

// RunReport (the `ferry-bench report` command) runs every benchmark one after another,
// each with its own `ferry up` (only one can run on a machine, and two cores leave no room
// for two benchmarks at once), and writes what they measured as one markdown file, o.Out,
// with PNG plots beside it (WriteReport). It writes the report also when a benchmark failed
// or ctx was cancelled: a part that failed or did not run is shown so, with its error, and
// the report holds no figure that a benchmark did not measure in this run. The error says
// how many parts failed.
func RunReport(ctx context.Context, o ReportOptions) (*Report, error) {
	log, say := bench.Reporter(o.Log)
	o.Log = log
	for _, s := range o.Skip {
		if !slices.Contains(reportParts, s) {
			return nil, fmt.Errorf("--skip %s: no such part (%s)", s, strings.Join(reportParts, ", "))
		}
	}
	if !strings.HasSuffix(o.Out, ".md") {
		return nil, fmt.Errorf("--out %s: the report is a markdown file (.md)", o.Out)
	}
	r, steps, err := planReport(o)
	if err != nil {
		return nil, err
	}
	// Where the report goes must be there before an hour of benchmarks, not after.
	if err := os.MkdirAll(plotsDir(o.Out), 0o755); err != nil {
		return nil, err
	}
	if !skipsAll(o.Skip) {
		if err := bench.WaitNoOtherCluster(ctx, o.Port, o.WaitOther, say); err != nil {
			return nil, err
		}
	}
	r.Machine = readMachine(ctx)
	r.Date = time.Now()
	for i, s := range steps {
		switch {
		case slices.Contains(o.Skip, s.kind):
			s.part.Skipped = "--skip " + s.kind
			continue
		case ctx.Err() != nil:
			s.part.Skipped = "interrupted before it started"
			continue
		}
		say("Report part %d/%d, %s: %s", i+1, len(steps), s.name, s.part.Command)
		t := time.Now()
		err := s.run(ctx)
		s.part.Elapsed = time.Since(t)
		if err != nil {
			s.part.Err = err.Error()
			say("Report part %s FAILED after %s: %s", s.name, s.part.Elapsed.Round(time.Second), bench.FirstLine(s.part.Err))
		} else {
			say("Report part %s done in %s", s.name, s.part.Elapsed.Round(time.Second))
		}
	}
	r.Elapsed = time.Since(r.Date)
	if err := WriteReport(r, o.Out); err != nil {
		return r, err
	}
	say("Wrote %s and its plots in %s", o.Out, plotsDir(o.Out))
	if ctx.Err() != nil {
		return r, errors.New("interrupted; the report shows what was measured")
	}
	if n := r.Failed(); n > 0 {
		return r, fmt.Errorf("%d of %d benchmarks failed; the report shows their errors", n, len(r.parts()))
	}
	return r, nil
}

// planReport makes the report's parts with their commands, and the steps that fill them.
func planReport(o ReportOptions) (*Report, []reportStep, error) {
	bin := o.FerryBin
	if !skipsAll(o.Skip) {
		var err error
		if bin, err = bench.FerryBinary(o.FerryBin); err != nil {
			return nil, nil, err
		}
	}
	// Every part waits a little for the cluster of the one before to go.
	wait := max(o.WaitOther, time.Minute)
	r := &Report{Command: shellLine(o.Args...), PlotsDir: filepath.Base(plotsDir(o.Out)),
		Migration: make([]MigrationPart, len(o.MemorySizes)), Scale: make([]ScalePart, len(o.ScaleSizes))}
	var steps []reportStep
	// command is the line that runs one part on its own.
	command := func(sub string, args ...string) string {
		if o.Port != migration.DefaultOptions().Port {
			args = append(args, "--port", strconv.Itoa(o.Port))
		}
		if o.FerryBin != "" {
			args = append(args, "--ferry", o.FerryBin)
		}
		return shellLine(append([]string{o.Self, sub}, args...)...)
	}

	for _, mem := range append(slices.Clone(o.MemorySizes), o.DrainMemory) {
		if _, err := bench.GuestMemory(mem); err != nil {
			return nil, nil, err
		}
	}
	for i, mem := range o.MemorySizes {
		mo := migration.DefaultOptions()
		mo.FerryBin, mo.Port, mo.WaitOther, mo.Out = bin, o.Port, wait, o.Log
		mo.Memory, mo.Runs, mo.DirtyMiB = mem, o.Runs, o.DirtyMiB
		p := &r.Migration[i]
		p.Memory = mem
		p.Command = command(partMigration, "--memory", mem, "--runs", strconv.Itoa(o.Runs), "--dirty-mib", strconv.Itoa(o.DirtyMiB))
		steps = append(steps, reportStep{kind: partMigration, name: "migration " + mem, part: &p.Part, run: func(ctx context.Context) (err error) {
			p.Result, err = migration.RunMigration(ctx, mo)
			return err
		}})
	}

	do := drain.DefaultDrainOptions()
	do.FerryBin, do.Port, do.WaitOther, do.Out = bin, o.Port, wait, o.Log
	do.VMs, do.Memory = o.DrainVMs, o.DrainMemory
	r.Drain.VMs, r.Drain.Memory = do.VMs, do.Memory
	r.Drain.Command = command(partDrain, "--vms", strconv.Itoa(do.VMs), "--memory", do.Memory)
	steps = append(steps, reportStep{kind: partDrain, name: partDrain, part: &r.Drain.Part, run: func(ctx context.Context) (err error) {
		r.Drain.Result, err = drain.RunDrain(ctx, do)
		return err
	}})

	fo := failover.DefaultFailoverOptions()
	fo.FerryBin, fo.Port, fo.WaitOther, fo.Out = bin, o.Port, wait, o.Log
	fo.Profile, fo.Faults, fo.Runs = o.FailoverProfile, o.FailoverFaults, o.FailoverRuns
	r.Failover.Memory = fo.Memory
	r.Failover.Command = command(partFailover, "--profile", fo.Profile, "--faults", strings.Join(fo.Faults, ","), "--runs", strconv.Itoa(fo.Runs))
	steps = append(steps, reportStep{kind: partFailover, name: partFailover, part: &r.Failover.Part, run: func(ctx context.Context) (err error) {
		r.Failover.Result, err = failover.RunFailover(ctx, fo)
		return err
	}})

	ffo := failover.DefaultFalseFencingOptions()
	ffo.FerryBin, ffo.Port, ffo.WaitOther, ffo.Out = bin, o.Port, wait, o.Log
	ffo.Profiles, ffo.Duration = o.FalseFencingProfiles, o.FalseFencingDuration
	r.FalseFencing.Command = command(partFalseFencing, "--profiles", strings.Join(ffo.Profiles, ","), "--duration", ffo.Duration.String())
	steps = append(steps, reportStep{kind: partFalseFencing, name: partFalseFencing, part: &r.FalseFencing.Part, run: func(ctx context.Context) (err error) {
		r.FalseFencing.Result, err = failover.RunFalseFencing(ctx, ffo)
		return err
	}})

	for i, size := range o.ScaleSizes {
		nodes, per, err := parseScaleSize(size)
		if err != nil {
			return nil, nil, err
		}
		so := scale.DefaultScaleOptions()
		so.Ferry, so.Port, so.WaitOther, so.Out = bin, o.Port, wait, o.Log
		so.Nodes, so.VMsPerNode, so.Evacuate, so.Fail = nodes, per, o.ScaleEvacuate, o.ScaleFail
		p := &r.Scale[i]
		p.Nodes, p.VMsPerNode = nodes, per
		p.Command = command(partScale, "--nodes", strconv.Itoa(nodes), "--vms-per-node", strconv.Itoa(per),
			"--evacuate", strconv.FormatFloat(so.Evacuate, 'g', -1, 64), "--fail", strconv.Itoa(so.Fail))
		steps = append(steps, reportStep{kind: partScale, name: "scale " + size, part: &p.Part, run: func(ctx context.Context) (err error) {
			p.Result, err = scale.RunScale(ctx, so)
			return err
		}})
	}
	return r, steps, nil
}

// skipsAll tells whether skip names every part.
func skipsAll(skip []string) bool {
	for _, p := range reportParts {
		if !slices.Contains(skip, p) {
			return false
		}
	}
	return true
}

// parseScaleSize reads NODESxVMS_PER_NODE.
func parseScaleSize(s string) (nodes, perNode int, err error) {
	a, b, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "x")
	if ok {
		nodes, err = strconv.Atoi(a)
		if err == nil {
			perNode, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || nodes < 1 || perNode < 1 {
		return 0, 0, fmt.Errorf("--scale-sizes %q: want NODESxVMS_PER_NODE, e.g. 10x10", s)
	}
	return nodes, perNode, nil
}

// WriteReport draws the plots into the directory beside out (out without its extension)
// and writes the markdown to out. A plot that cannot be drawn is named in the report with
// its error; it does not stop the report.
func WriteReport(r *Report, out string) error {
	dir := plotsDir(out)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	r.PlotsDir = filepath.Base(dir)
	r.Plots = WritePlots(dir, *r)
	return os.WriteFile(out, []byte(RenderMarkdown(*r)), 0o644)
}

// plotsDir is where the plots of the report out go: out without its extension.
func plotsDir(out string) string { return strings.TrimSuffix(out, filepath.Ext(out)) }

// shellLine is a command line as one would type it, quoting what the shell would split or
// expand.
func shellLine(words ...string) string {
	out := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		out[i] = w
	}
	return strings.Join(out, " ")
}
