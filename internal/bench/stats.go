package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Outcome is how one migration ended.
type Outcome int

const (
	// OK: the migration completed and the guest went on counting.
	OK Outcome = iota
	// PostFailure: the migration completed, but the guest did not count on within 10 s or
	// rebooted.
	PostFailure
	// MigrationFailed: the migration itself failed (operation Failed, QEMU error, timeout).
	MigrationFailed
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case PostFailure:
		return "POST-MIGRATION FAILURE"
	case MigrationFailed:
		return "MIGRATION FAILED"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Sample is one measured migration.
type Sample struct {
	// E2E is the whole operation as a user sees it (Ferry: vmop created → Completed; raw:
	// migrate command → destination running).
	E2E time.Duration
	// Transfer is QEMU's total migration time.
	Transfer time.Duration
	// Downtime is how long QEMU paused the guest at switchover.
	Downtime time.Duration
	Outcome  Outcome
	// Detail explains a failure.
	Detail string
	// Net is what a ping every 10 ms from the host to the VM's address saw from the
	// operation's creation until the address answered again on the target (Ferry only,
	// when the VM has a NIC and the benchmark runs as root).
	Net *NetSample
	// Timeline is when each stage of a Ferry migration was seen (Ferry only).
	Timeline Timeline
}

// NetSample is the network's side of one migration.
type NetSample struct {
	Sent, Lost int
	// Outage is the longest run of probes that got no answer, from the send time of its
	// first to that of the next answered probe: the network downtime.
	Outage time.Duration
	// Silence is the longest time without any reply arriving. It is at least Outage, and
	// also counts replies the guest sent late (a busy TCG guest answers slowly, and probes
	// it took in before its pause are answered after it).
	Silence time.Duration
}

// Summary is the median and maximum of some durations.
type Summary struct {
	N      int
	Median time.Duration
	Max    time.Duration
}

// Summarize returns the median (the mean of the two middle values for an even count) and
// the maximum of ds. An empty ds gives N == 0.
func Summarize(ds []time.Duration) Summary {
	if len(ds) == 0 {
		return Summary{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Summary{N: n, Median: med, Max: s[n-1]}
}

// Series is the samples of one system (ferry or raw) in one scenario.
type Series struct {
	Samples []Sample
	// Skipped says the series was not run (e.g. --skip-raw).
	Skipped bool
}

// Completed are the samples whose migration completed (including post-migration failures).
func (s Series) Completed() []Sample {
	var out []Sample
	for _, x := range s.Samples {
		if x.Outcome != MigrationFailed {
			out = append(out, x)
		}
	}
	return out
}

// Count is the number of samples with outcome o.
func (s Series) Count(o Outcome) int {
	n := 0
	for _, x := range s.Samples {
		if x.Outcome == o {
			n++
		}
	}
	return n
}

// Stat summarizes one duration of the completed samples.
func (s Series) Stat(f func(Sample) time.Duration) Summary {
	var ds []time.Duration
	for _, x := range s.Completed() {
		ds = append(ds, f(x))
	}
	return Summarize(ds)
}

func E2EOf(s Sample) time.Duration      { return s.E2E }
func TransferOf(s Sample) time.Duration { return s.Transfer }
func DowntimeOf(s Sample) time.Duration { return s.Downtime }

// ScenarioResult is what one scenario measured.
type ScenarioResult struct {
	Name  string
	Ferry Series
	Raw   Series
}

func Millis(d time.Duration) string { return fmt.Sprintf("%d", d.Milliseconds()) }

func MedMax(s Summary) (string, string) {
	if s.N == 0 {
		return "-", "-"
	}
	return Millis(s.Median), Millis(s.Max)
}

// NetTarget is how much longer than QEMU's downtime the network may be silent.
const NetTarget = 100 * time.Millisecond

func SaySample(say func(string, ...any), what string, i, n int, s Sample) {
	msg := fmt.Sprintf("[%s %d/%d] e2e %d ms, transfer %d ms, downtime %d ms: %s", what, i+1, n,
		s.E2E.Milliseconds(), s.Transfer.Milliseconds(), s.Downtime.Milliseconds(), s.Outcome)
	if s.Net != nil {
		msg = fmt.Sprintf("[%s %d/%d] e2e %d ms, transfer %d ms, downtime %d ms, network: %d of %d pings lost, down %d ms, silent %d ms: %s", what, i+1, n,
			s.E2E.Milliseconds(), s.Transfer.Milliseconds(), s.Downtime.Milliseconds(), s.Net.Lost, s.Net.Sent, s.Net.Outage.Milliseconds(), s.Net.Silence.Milliseconds(), s.Outcome)
	}
	if s.Outcome == MigrationFailed {
		msg = fmt.Sprintf("[%s %d/%d] %s", what, i+1, n, s.Outcome)
	}
	if len(s.Timeline) > 0 {
		msg += "\n    stages (ms from the vmop's creation, step in brackets): " + s.Timeline.String()
	}
	if s.Detail != "" {
		msg += ": " + FirstLine(s.Detail)
	}
	say("%s", msg)
}

func OrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func LastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// Pct is "p50 X, p99 Y, max Z" of ds.
func Pct(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(math.Ceil(f*float64(len(s))))-1)] }
	return fmt.Sprintf("p50 %s, p99 %s, max %s", q(0.5).Round(10*time.Millisecond), q(0.99).Round(10*time.Millisecond), s[len(s)-1].Round(10*time.Millisecond))
}
