package bench

import (
	"testing"
	"time"
)

func msd(v ...int) []time.Duration {
	var out []time.Duration
	for _, x := range v {
		out = append(out, time.Duration(x)*time.Millisecond)
	}
	return out
}

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		in       []time.Duration
		med, max time.Duration
	}{
		{msd(5), 5 * time.Millisecond, 5 * time.Millisecond},
		{msd(30, 10, 20), 20 * time.Millisecond, 30 * time.Millisecond},
		{msd(40, 10, 20, 30), 25 * time.Millisecond, 40 * time.Millisecond},
		{msd(7, 7, 1, 100), 7 * time.Millisecond, 100 * time.Millisecond},
	} {
		s := Summarize(c.in)
		if s.N != len(c.in) || s.Median != c.med || s.Max != c.max {
			t.Errorf("Summarize(%v) = %+v, want median %v max %v", c.in, s, c.med, c.max)
		}
	}
	if s := Summarize(nil); s.N != 0 {
		t.Errorf("Summarize(nil) = %+v", s)
	}
	in := msd(3, 1, 2)
	Summarize(in)
	if in[0] != 3*time.Millisecond {
		t.Error("Summarize reordered its argument")
	}
}
