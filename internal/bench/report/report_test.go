package report

import (
	"context"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/bench/benchtest"
	"github.com/ferryvm/ferry/internal/bench/drain"
	"github.com/ferryvm/ferry/internal/bench/failover"
	"github.com/ferryvm/ferry/internal/bench/migration"
	"github.com/ferryvm/ferry/internal/bench/scale"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// testReport is made-up input for the renderer and the plots: it exercises every kind of
// part (measured, failed with and without figures, skipped). Its figures are test data and
// appear in no report.
func testReport() Report {
	series := func(ss ...bench.Sample) bench.Series { return bench.Series{Samples: ss} }
	migration := func(mem string, mib int64, scale int) MigrationPart {
		return MigrationPart{
			Part:   Part{Command: "bin/ferry-bench migration --memory " + mem + " --runs 3 --dirty-mib 32", Elapsed: 200 * time.Second},
			Memory: mem,
			Result: &migration.MigrationResult{Memory: mem, MemoryMiB: mib, Runs: 3, DirtyMiB: 32, ParamsFromController: true,
				Params: hypervisor.MigrationParams{MaxBandwidth: 1 << 30, DowntimeLimit: 300 * time.Millisecond},
				Scenarios: []bench.ScenarioResult{
					{Name: "idle",
						Ferry: series(benchtest.Sample(4000*scale, 900*scale, 40, bench.OK), benchtest.Sample(5000*scale, 1000*scale, 50, bench.OK), benchtest.Sample(6000*scale, 1100*scale, 60, bench.OK)),
						Raw:   series(benchtest.Sample(1500*scale, 800*scale, 30, bench.OK), benchtest.Sample(1600*scale, 850*scale, 35, bench.OK), benchtest.Sample(1700*scale, 900*scale, 40, bench.OK))},
					{Name: "dirty-32MiB",
						Ferry: series(benchtest.Sample(7000*scale, 2000*scale, 90, bench.OK), benchtest.Sample(0, 0, 0, bench.MigrationFailed), benchtest.Sample(8000*scale, 2500*scale, 120, bench.PostFailure)),
						Raw:   bench.Series{Skipped: true}},
				}},
		}
	}
	failed := MigrationPart{Memory: "1Gi", Part: Part{Command: "bin/ferry-bench migration --memory 1Gi --runs 3 --dirty-mib 32",
		Err: "benchmark stopped early: VM not ready\nsecond line of the error", Elapsed: 90 * time.Second}}
	run := func(fault string, n int, marks failover.FailoverMarks) failover.FailoverRun {
		return failover.FailoverRun{Fault: fault, Run: n, From: "node-1", To: "node-2", Marks: marks, OldLast: -time.Second, OldLastOK: true, Samples: 300}
	}
	phase := func(pc, p50, p99 time.Duration, n int64) scale.ControlPlaneLoad {
		return scale.ControlPlaneLoad{CPUPercent: pc.Seconds(), RSS: 300 << 20, RequestsPerSec: 42,
			Reconcile: scale.ReconcileTimes{N: n, P50: scale.BucketBound{Le: p50, OK: true}, P99: scale.BucketBound{Le: p99, OK: true}}}
	}
	return Report{
		Date:    time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC),
		Elapsed: 41 * time.Minute,
		Command: "bin/ferry-bench report",
		Machine: Machine{CPU: "Test CPU", CPUs: 2, Memory: "23.5 GiB", Kernel: "Linux 6.1", QEMU: "QEMU emulator version 7.2.0",
			KVM: "no (no /dev/kvm): guests run under TCG, QEMU's emulator", Go: "go1.26.0", Commit: "abc123"},
		Migration: []MigrationPart{migration("128Mi", 128, 1), migration("512Mi", 512, 2), failed},
		Drain: DrainPart{VMs: 2, Memory: "128Mi", Part: Part{Command: "bin/ferry-bench drain --vms 2 --memory 128Mi"},
			Result: &drain.DrainResult{Node: "node-1", ClusterNodes: 3, Webhook: "ferry-eviction", Drain: 41 * time.Second,
				Single: series(benchtest.Sample(9000, 0, 0, bench.OK), benchtest.Sample(11000, 0, 0, bench.OK)),
				VMs: []drain.DrainVM{{Name: "drain-bench-1", From: "node-1", To: "node-2", IPBefore: "10.66.10.2", IPAfter: "10.66.10.2", Moved: 12 * time.Second},
					{Name: "drain-bench-2", From: "node-1", To: "node-3", IPBefore: "10.66.10.3", IPAfter: "10.66.10.3", Moved: 30 * time.Second, Failure: "the guest rebooted"}}}},
		Failover: FailoverPart{Memory: "128Mi", Part: Part{Command: "bin/ferry-bench failover --profile Fast --faults poweroff,freeze --runs 1"},
			Result: &failover.FailoverReport{Profile: "Fast", Timing: deckhousev1.Timing{Timeout: 5 * time.Second, LeaseInterval: time.Second, Margin: 2 * time.Second},
				Runs: []failover.FailoverRun{
					run("poweroff", 1, failover.FailoverMarks{Detected: 3 * time.Second, Fenced: 8 * time.Second, PodCreated: 8500 * time.Millisecond,
						Scheduled: 8700 * time.Millisecond, Restarted: 10 * time.Second, Booted: 30 * time.Second, VMRunning: 29 * time.Second}),
					{Fault: "freeze", Run: 1, From: "node-2", Failure: "no heartbeat of a new instance within 5m0s"},
				}}},
		FalseFencing: FalseFencingPart{Part: Part{Command: "bin/ferry-bench false-fencing --profiles Fast --duration 1m0s", Skipped: "--skip false-fencing"}},
		Scale: []ScalePart{
			{Nodes: 10, VMsPerNode: 10, Part: Part{Command: "bin/ferry-bench scale --nodes 10 --vms-per-node 10 --evacuate 0.25 --fail 2"},
				Result: &scale.ScaleResult{Nodes: 10, VMsPerNode: 10,
					Start:    &scale.ScalePhase{Nodes: 10, VMs: 100, Took: 50 * time.Second, Load: phase(35*time.Second, 5*time.Millisecond, 250*time.Millisecond, 900)},
					Drain:    &scale.ScalePhase{Nodes: 1, VMs: 3, Took: 9 * time.Second, PerVM: benchtest.Millis(2000, 3000, 4000), Load: phase(20*time.Second, 5*time.Millisecond, 100*time.Millisecond, 60)},
					Evacuate: &scale.ScalePhase{Nodes: 3, VMs: 3, Took: 12 * time.Second, PerVM: benchtest.Millis(4000, 5000, 6000), Load: phase(50*time.Second, 10*time.Millisecond, time.Second, 300)},
					Failure:  &scale.ScalePhase{Nodes: 2, VMs: 2, Took: 20 * time.Second, PerVM: benchtest.Millis(15000, 18000), Load: phase(10*time.Second, 5*time.Millisecond, 50*time.Millisecond, 80)}}},
			{Nodes: 25, VMsPerNode: 10, Part: Part{Command: "bin/ferry-bench scale --nodes 25 --vms-per-node 10 --evacuate 0.25 --fail 2",
				Err: "100 of 250 VMs Running after 15m0s", Elapsed: 16 * time.Minute},
				Result: &scale.ScaleResult{Nodes: 25, VMsPerNode: 10}},
		},
		PlotsDir: "benchmarks",
	}
}

// mdRow returns the cells of the markdown table row whose first cells are first.
func mdRow(t *testing.T, md string, first ...string) []string {
	t.Helper()
	for _, l := range strings.Split(md, "\n") {
		if !strings.HasPrefix(l, "| ") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "| "), " | ")
		if len(cells) >= len(first) && slices.Equal(cells[:len(first)], first) {
			return cells
		}
	}
	t.Fatalf("no table row starting with %q in:\n%s", first, md)
	return nil
}

func TestRenderMarkdown(t *testing.T) {
	r := testReport()
	r.Plots = []Plot{
		{Section: partMigration, File: "migration-e2e.png", Title: "Live migration end to end (median)"},
		{Section: partScale, File: "scale-per-vm.png", Title: "Per-VM time", Err: "disk full"},
	}
	md := RenderMarkdown(r)
	t.Log("\n" + md)

	for _, want := range []string{
		"Measured by `ferry-bench report` on 2030-01-02 03:04 UTC; the whole run took 41m0s.",
		"| CPU | Test CPU, 2 CPUs |", "| KVM | no (no /dev/kvm): guests run under TCG, QEMU's emulator |", "| Commit | abc123 |",
		"![Live migration end to end (median)](benchmarks/migration-e2e.png)",
		`*Plot "Per-VM time" could not be drawn: disk full*`,
		// Each part's command, with how it went.
		"- 128Mi: `bin/ferry-bench migration --memory 128Mi --runs 3 --dirty-mib 32` — ran 3m20s",
		"- 1Gi: `bin/ferry-bench migration --memory 1Gi --runs 3 --dirty-mib 32` — FAILED after 1m30s: benchmark stopped early: VM not ready",
		"  second line of the error",
		"- `bin/ferry-bench drain --vms 2 --memory 128Mi`",
		"- `bin/ferry-bench false-fencing --profiles Fast --duration 1m0s` — skipped (--skip false-fencing)",
		"- 25 × 10: `bin/ferry-bench scale --nodes 25 --vms-per-node 10 --evacuate 0.25 --fail 2` — FAILED after 16m0s: 100 of 250 VMs Running after 15m0s",
		"- 512Mi Ferry dirty-32MiB #2: MIGRATION FAILED\n",
		"Fencing profile Fast: watchdog 5s, lease renewed every 1s, fenced 7s after the last renewal.",
		"Target (Fast): the VM restarted elsewhere under 15s plus guest boot",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q", want)
		}
	}

	// Medians and maxima of the input, in ms; 2 of 3 dirty Ferry migrations completed.
	for _, tc := range []struct{ first, want []string }{
		{[]string{"128Mi", "idle", "Ferry"}, []string{"3", "5000", "6000", "1000", "1100", "50", "60", "0/3", "0/3"}},
		{[]string{"128Mi", "idle", "raw"}, []string{"3", "1600", "1700", "850", "900", "35", "40", "0/3", "0/3"}},
		{[]string{"512Mi", "dirty-32MiB", "Ferry"}, []string{"2", "15000", "16000", "4500", "5000", "105", "120", "1/3", "1/2"}},
		{[]string{"512Mi", "dirty-32MiB", "raw"}, []string{"skipped"}},
		{[]string{"1Gi"}, []string{"no figures: FAILED after 1m30s: benchmark stopped early: VM not ready"}},
		{[]string{"512Mi", "idle", "5.9x"}, []string{"6800"}}, // Ferry e2e over raw transfer; Ferry − raw e2e
		// Drain: 41000 against 2 × 10000.
		{[]string{"2", "3", "ferry-eviction", "41000", "10000", "11000", "20000", "2.05x"}, []string{"0/2", "0/2", "1/2"}},
		{[]string{"drain-bench-2", "node-1", "node-3"}, []string{"10.66.10.3", "10.66.10.3", "30000", "POST-DRAIN FAILURE: the guest rebooted"}},
		{[]string{"Fault", "Run", "Nodes"}, []string{"Detection", "Fencing wait", "New pod", "Scheduled", "Pod running", "Boot", "Total", "VM Running", "Guest gap", "Samples with 2 QEMUs", "Result"}},
		{[]string{"poweroff", "1", "node-1 → node-2"}, []string{"3000", "5000", "500", "200", "1300", "20000", "30000", "29000", "31000", "0/300", "ok"}},
		{[]string{"freeze", "1", "node-2 → -"}, []string{"-", "-", "-", "-", "-", "-", "-", "-", "-", "0/0", "FAILED: no heartbeat of a new instance within 5m0s"}},
		{[]string{"10 × 10", "evacuate", "3", "3", "12.0"}, []string{"5.0", "6.0", "6.0", "50", "300", "42", "≤ 10ms", "≤ 1s", "300"}},
		{[]string{"25 × 10", "start"}, []string{"not reached"}},
	} {
		got := mdRow(t, md, tc.first...)[len(tc.first):]
		if !slices.Equal(got[:len(tc.want)], tc.want) {
			t.Errorf("row %q: got %q, want %q", tc.first, got, tc.want)
		}
	}
	// A skipped part shows no table of its own.
	ff := md[strings.Index(md, "## False fencing"):strings.Index(md, "## Scale")]
	if strings.Contains(ff, "| Profile |") {
		t.Errorf("the skipped false-fencing part has a table:\n%s", ff)
	}
}

func TestRenderMarkdownNothingRun(t *testing.T) {
	r := Report{Migration: []MigrationPart{{Memory: "128Mi", Part: Part{Command: "c", Skipped: "--skip migration"}}},
		Drain: DrainPart{Part: Part{Skipped: "interrupted before it started"}}}
	md := RenderMarkdown(r)
	if n := strings.Count(md, "No figures."); n != 1 { // the scale table; migration's has the skipped row
		t.Errorf("%d tables without figures, want 1:\n%s", n, md)
	}
	if !strings.Contains(md, "| 128Mi | no figures: skipped (--skip migration) |") {
		t.Errorf("the skipped migration is not shown so:\n%s", md)
	}
	if regexp.MustCompile(`\| [0-9]+ \|`).MatchString(md) {
		t.Errorf("a report of nothing has figures:\n%s", md)
	}
}

func TestWriteReport(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "docs", "benchmarks.md")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	r := testReport()
	if err := WriteReport(&r, out); err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, p := range r.Plots {
		if p.Err != "" {
			t.Errorf("plot %s: %s", p.File, p.Err)
		}
		files = append(files, p.File)
	}
	want := []string{"migration-e2e.png", "migration-transfer.png", "migration-downtime.png", "failover-phases.png", "scale-reconcile.png", "scale-per-vm.png"}
	if !slices.Equal(files, want) {
		t.Errorf("plots %q, want %q", files, want)
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// Every image the markdown links is a PNG beside it.
	links := regexp.MustCompile(`!\[[^]]*\]\(([^)]+)\)`).FindAllStringSubmatch(string(md), -1)
	if len(links) != len(want) {
		t.Errorf("%d images linked, want %d", len(links), len(want))
	}
	for _, l := range links {
		if !strings.HasPrefix(l[1], "benchmarks/") {
			t.Errorf("link %s is not relative to the report's plots directory", l[1])
		}
		f, err := os.Open(filepath.Join(filepath.Dir(out), l[1]))
		if err != nil {
			t.Error(err)
			continue
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", l[1], err)
		} else if b := img.Bounds(); b.Dx() < 300 || b.Dy() < 200 {
			t.Errorf("%s is %dx%d", l[1], b.Dx(), b.Dy())
		}
	}
}

func TestWritePlotsNothingToShow(t *testing.T) {
	r := testReport()
	dir := t.TempDir()
	WritePlots(dir, r)
	r.Migration, r.Failover.Result, r.Scale = nil, nil, r.Scale[1:] // the 25 × 10 run reached no phase
	if plots := WritePlots(dir, r); len(plots) != 0 {
		t.Errorf("plots without figures: %+v", plots)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Errorf("plots of the earlier report left: %q", left)
	}
	// One memory size, one cluster size: lines of one point each still draw.
	r = testReport()
	r.Migration, r.Scale = r.Migration[:1], r.Scale[:1]
	dir = t.TempDir()
	for _, p := range WritePlots(dir, r) {
		if p.Err != "" {
			t.Errorf("%s: %s", p.File, p.Err)
		}
		if _, err := os.Stat(filepath.Join(dir, p.File)); err != nil {
			t.Error(err)
		}
	}
}

func TestRunReportAllSkipped(t *testing.T) {
	o := DefaultReportOptions()
	o.Skip = slices.Clone(reportParts)
	o.Out = filepath.Join(t.TempDir(), "benchmarks.md")
	o.Args = []string{"bin/ferry-bench", "report", "--skip", strings.Join(reportParts, ",")}
	o.Log = &strings.Builder{}
	r, err := RunReport(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(r.parts()); n != 3+1+1+1+3 {
		t.Errorf("%d parts, want 9", n)
	}
	for _, p := range r.parts() {
		if p.Skipped == "" || p.Elapsed != 0 {
			t.Errorf("part %q ran: %+v", p.Command, p)
		}
	}
	md, err := os.ReadFile(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "bin/ferry-bench report --skip migration,drain,failover,false-fencing,scale") {
		t.Errorf("the report does not show its command:\n%s", md)
	}
}

func TestPlanReportCommands(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "my ferry")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	o := DefaultReportOptions()
	o.FerryBin, o.Port = bin, 18443
	o.MemorySizes, o.Runs, o.DirtyMiB = []string{"256Mi"}, 1, 64
	o.FailoverFaults, o.FailoverRuns = []string{"poweroff"}, 2
	o.ScaleSizes = []string{"3x2"}
	r, steps, err := planReport(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 5 {
		t.Errorf("%d steps, want 5", len(steps))
	}
	tail := " --port 18443 --ferry '" + bin + "'"
	for _, tc := range []struct{ got, want string }{
		{r.Migration[0].Command, "bin/ferry-bench migration --memory 256Mi --runs 1 --dirty-mib 64" + tail},
		{r.Drain.Command, "bin/ferry-bench drain --vms 3 --memory 128Mi" + tail},
		{r.Failover.Command, "bin/ferry-bench failover --profile Fast --faults poweroff --runs 2" + tail},
		{r.FalseFencing.Command, "bin/ferry-bench false-fencing --profiles Critical,Fast,Balanced,Tolerant --duration 1m0s" + tail},
		{r.Scale[0].Command, "bin/ferry-bench scale --nodes 3 --vms-per-node 2 --evacuate 0.25 --fail 2" + tail},
	} {
		if tc.got != tc.want {
			t.Errorf("command %q, want %q", tc.got, tc.want)
		}
	}

	for _, bad := range []func(*ReportOptions){
		func(o *ReportOptions) { o.ScaleSizes = []string{"10"} },
		func(o *ReportOptions) { o.MemorySizes = []string{"64Mi"} },
		func(o *ReportOptions) { o.DrainMemory = "lots" },
	} {
		o := DefaultReportOptions()
		o.FerryBin = bin
		bad(&o)
		if _, _, err := planReport(o); err == nil {
			t.Errorf("no error for %+v", o)
		}
	}
}

func TestParseScaleSize(t *testing.T) {
	for _, tc := range []struct {
		in          string
		nodes, vms  int
		wantFailure bool
	}{
		{in: "10x10", nodes: 10, vms: 10},
		{in: " 50X3 ", nodes: 50, vms: 3},
		{in: "10", wantFailure: true},
		{in: "0x10", wantFailure: true},
		{in: "10x", wantFailure: true},
		{in: "axb", wantFailure: true},
	} {
		n, v, err := parseScaleSize(tc.in)
		if (err != nil) != tc.wantFailure || n != tc.nodes || v != tc.vms {
			t.Errorf("parseScaleSize(%q) = %d, %d, %v", tc.in, n, v, err)
		}
	}
}

func TestShellLine(t *testing.T) {
	got := shellLine("bin/ferry-bench", "report", "--out", "/tmp/my docs/b.md", "--x", "it's", "")
	want := `bin/ferry-bench report --out '/tmp/my docs/b.md' --x 'it'\''s' ''`
	if got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestMachineParsing(t *testing.T) {
	cpu := "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"
	if m, n := parseCPUInfo(cpu); m != "AMD EPYC" || n != 2 {
		t.Errorf("parseCPUInfo = %q, %d", m, n)
	}
	if m, n := parseCPUInfo("processor : 0\n"); !strings.HasPrefix(m, "unknown") || n != 1 {
		t.Errorf("parseCPUInfo without a model = %q, %d", m, n)
	}
	if got := parseMemTotal("MemTotal:       24684092 kB\nMemFree: 1 kB\n"); got != "23.5 GiB" {
		t.Errorf("parseMemTotal = %q", got)
	}
	if got := parseMemTotal("MemTotal:\n"); !strings.HasPrefix(got, "unknown") {
		t.Errorf("parseMemTotal of nothing = %q", got)
	}
}

func TestNearestRank(t *testing.T) {
	ds := benchtest.Millis(5, 1, 4, 2, 3)
	if got := nearestRank(ds, 0.5); got != 3*time.Millisecond {
		t.Errorf("p50 %s", got)
	}
	if got := nearestRank(ds, 0.99); got != 5*time.Millisecond {
		t.Errorf("p99 %s", got)
	}
	if bench.Pct(ds) != "p50 0s, p99 10ms, max 10ms" { // Pct rounds to 10 ms; the same ranks
		t.Errorf("pct %s", bench.Pct(ds))
	}
}
