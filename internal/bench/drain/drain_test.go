package drain

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/bench/benchtest"
)

func TestDrainTable(t *testing.T) {
	r := DrainResult{
		Node:  "node-1",
		Drain: 41 * time.Second,
		Single: bench.Series{Samples: []bench.Sample{
			benchtest.Sample(9000, 0, 0, bench.OK),
			benchtest.Sample(11000, 0, 0, bench.PostFailure),
			benchtest.Sample(10000, 0, 0, bench.OK),
			benchtest.Sample(0, 0, 0, bench.MigrationFailed), // not timed
		}},
		VMs: []DrainVM{
			{Name: "drain-bench-1", From: "node-1", To: "node-3", IPBefore: "10.66.10.2", IPAfter: "10.66.10.2", Moved: 12500 * time.Millisecond},
			{Name: "drain-bench-2", From: "node-1", To: "node-2", IPBefore: "10.66.10.3", IPAfter: "10.66.10.3", Moved: 30 * time.Second, Failure: "the guest rebooted"},
		},
	}
	var buf bytes.Buffer
	if err := DrainTable(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Log("\n" + out)

	// 2 VMs, drain 41000, single median 10000 of the 3 completed, max 11000,
	// N × single 20000, 41000 / 20000 = 2.05, one VM failed.
	want := map[string][]string{
		"VMS":           {"VMS", "DRAIN", "SINGLE", "MED", "SINGLE", "MAX", "N", "×", "SINGLE", "MED", "DRAIN", "/", "(N", "×", "SINGLE", "MED)", "POST-DRAIN", "FAILURES"},
		"2 ":            {"2", "41000", "10000", "11000", "20000", "2.05x", "1/2"},
		"VM ":           {"VM", "FROM", "TO", "IP", "BEFORE", "IP", "AFTER", "OFF", "NODE-1", "AFTER", "RESULT"},
		"drain-bench-1": {"drain-bench-1", "node-1", "node-3", "10.66.10.2", "10.66.10.2", "12500", "ok"},
		"drain-bench-2": {"drain-bench-2", "node-1", "node-2", "10.66.10.3", "10.66.10.3", "30000", "POST-DRAIN", "FAILURE"},
	}
	for prefix, cells := range want {
		got := benchtest.Fields(t, out, prefix)
		if strings.Join(got, " ") != strings.Join(cells, " ") {
			t.Errorf("row %q = %v, want %v", prefix, got, cells)
		}
	}
	if !strings.Contains(out, "Single migrations: 3 completed of 4, 1 failed, 1 post-migration failures.") {
		t.Errorf("single migrations line missing or wrong:\n%s", out)
	}
	if got := r.PostDrainFailures(); got != 1 {
		t.Errorf("PostDrainFailures() = %d, want 1", got)
	}
}

func TestDrainTableFailedDrain(t *testing.T) {
	r := DrainResult{
		Node:        "node-1",
		DrainFailed: "did not finish within 10m",
		Single:      bench.Series{Samples: []bench.Sample{benchtest.Sample(8000, 0, 0, bench.OK)}},
		VMs:         []DrainVM{{Name: "drain-bench-1", From: "node-1", IPBefore: "10.66.10.2"}},
	}
	var buf bytes.Buffer
	if err := DrainTable(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Log("\n" + out)
	// No ratio and no post-drain verdict without a finished drain.
	if got, want := strings.Join(benchtest.Fields(t, out, "1 "), " "), "1 FAILED 8000 8000 8000 - -"; got != want {
		t.Errorf("summary row = %q, want %q", got, want)
	}
	if got, want := strings.Join(benchtest.Fields(t, out, "drain-bench-1"), " "), "drain-bench-1 node-1 - 10.66.10.2 - - -"; got != want {
		t.Errorf("VM row = %q, want %q", got, want)
	}
}

func TestDrainTableNoSingle(t *testing.T) {
	var buf bytes.Buffer
	if err := DrainTable(&buf, DrainResult{Node: "node-1", Drain: time.Second, VMs: []DrainVM{{Name: "a", From: "node-1", To: "node-2"}}}); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(benchtest.Fields(t, buf.String(), "1 "), " "), "1 1000 - - - - 0/1"; got != want {
		t.Errorf("summary row = %q, want %q", got, want)
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("lastLines = %q", got)
	}
	if got := lastLines("a\n", 5); got != "a" {
		t.Errorf("lastLines = %q", got)
	}
}
