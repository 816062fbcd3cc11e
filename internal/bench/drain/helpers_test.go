package drain

import (
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
)

func sample(e2e, xfer, down int, o bench.Outcome) bench.Sample {
	return bench.Sample{E2E: time.Duration(e2e) * time.Millisecond, Transfer: time.Duration(xfer) * time.Millisecond,
		Downtime: time.Duration(down) * time.Millisecond, Outcome: o}
}

// fields returns the whitespace-separated cells of the table line that starts with prefix.
func fields(t *testing.T, out, prefix string) []string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.Fields(l)
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", prefix, out)
	return nil
}
