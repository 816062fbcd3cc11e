// Package benchtest holds what the benchmarks' tests share: samples and durations in
// milliseconds, and the cells of a printed table's line.
package benchtest

import (
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
)

// Sample is a migration sample of e2e, transfer and downtime milliseconds.
func Sample(e2e, xfer, down int, o bench.Outcome) bench.Sample {
	return bench.Sample{E2E: time.Duration(e2e) * time.Millisecond, Transfer: time.Duration(xfer) * time.Millisecond,
		Downtime: time.Duration(down) * time.Millisecond, Outcome: o}
}

// Millis is each of v milliseconds as a duration.
func Millis(v ...int) []time.Duration {
	var out []time.Duration
	for _, x := range v {
		out = append(out, time.Duration(x)*time.Millisecond)
	}
	return out
}

// Fields returns the whitespace-separated cells of the table line that starts with prefix.
func Fields(t testing.TB, out, prefix string) []string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.Fields(l)
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", prefix, out)
	return nil
}
