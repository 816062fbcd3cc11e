package migration

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/bench/benchtest"
)

func TestTable(t *testing.T) {
	results := []bench.ScenarioResult{
		{
			Name: "idle",
			Ferry: bench.Series{Samples: []bench.Sample{
				benchtest.Sample(4000, 600, 30, bench.OK),
				benchtest.Sample(5000, 800, 50, bench.PostFailure),
				benchtest.Sample(4500, 700, 40, bench.OK),
				benchtest.Sample(0, 0, 0, bench.MigrationFailed), // not timed
			}},
			Raw: bench.Series{Samples: []bench.Sample{benchtest.Sample(900, 500, 20, bench.OK), benchtest.Sample(700, 300, 10, bench.OK)}},
		},
		{
			Name:  "dirty-64MiB",
			Ferry: bench.Series{Samples: []bench.Sample{benchtest.Sample(6000, 2000, 250, bench.OK)}},
			Raw:   bench.Series{Skipped: true},
		},
	}
	var buf bytes.Buffer
	if err := table(&buf, results); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Log("\n" + out)

	want := map[string][]string{
		"idle         ferry": {"idle", "ferry", "3", "4500", "5000", "700", "800", "40", "50", "1/4", "1/3"},
		"idle         raw":   {"idle", "raw", "2", "800", "900", "400", "500", "15", "20", "0/2", "0/2"},
		"dirty-64MiB  ferry": {"dirty-64MiB", "ferry", "1", "6000", "6000", "2000", "2000", "250", "250", "0/1", "0/1"},
		"dirty-64MiB  raw":   {"dirty-64MiB", "raw", "-", "(skipped)"},
		// 4500 / 400 = 11.25; 4500 - 400; 4500 - 800
		"idle         11": {"idle", "11.2x", "4100", "3700"},
		"dirty-64MiB  -":  {"dirty-64MiB", "-", "-", "-"},
	}
	for prefix, cells := range want {
		got := benchtest.Fields(t, out, prefix)
		if strings.Join(got, " ") != strings.Join(cells, " ") {
			t.Errorf("row %q = %v, want %v", prefix, got, cells)
		}
	}
	if !regexp.MustCompile(`Post-migration failures: Ferry 1/4 completed migrations, raw 0/2\. Failed Ferry migrations: 1/5\.`).MatchString(out) {
		t.Errorf("totals line missing or wrong:\n%s", out)
	}
}
