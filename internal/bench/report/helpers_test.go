package report

import (
	"time"

	"github.com/ferryvm/ferry/internal/bench"
)

func msd(v ...int) []time.Duration {
	var out []time.Duration
	for _, x := range v {
		out = append(out, time.Duration(x)*time.Millisecond)
	}
	return out
}

func sample(e2e, xfer, down int, o bench.Outcome) bench.Sample {
	return bench.Sample{E2E: time.Duration(e2e) * time.Millisecond, Transfer: time.Duration(xfer) * time.Millisecond,
		Downtime: time.Duration(down) * time.Millisecond, Outcome: o}
}
