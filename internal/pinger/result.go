package pinger

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is what a ping run (or part of one) found.
type Result struct {
	// Target is the pinged address.
	Target netip.Addr
	// Interval is the time between probes.
	Interval time.Duration
	// Probes are the run's probes in send order.
	Probes []Probe

	// Sent is len(Probes); Received counts the answered ones and Lost the others, so
	// Sent == Received + Lost.
	Sent, Received, Lost int
	// Duplicates counts extra replies.
	Duplicates int
	// Late counts lost probes whose reply came after the timeout.
	Late int
	// SendErrors counts lost probes whose sending failed.
	SendErrors int
}

// newResult returns the result of probes, with the counts.
func newResult(target netip.Addr, interval time.Duration, probes []Probe) Result {
	r := Result{Target: target, Interval: interval, Probes: probes, Sent: len(probes)}
	for _, pr := range probes {
		if pr.Answered {
			r.Received++
		} else {
			r.Lost++
		}
		if pr.Late {
			r.Late++
		}
		if pr.SendFailed {
			r.SendErrors++
		}
		r.Duplicates += pr.Duplicates
	}
	return r
}

// Outage is a run of consecutive unanswered probes.
type Outage struct {
	// From is the send time of the first lost probe.
	From time.Time
	// To is the send time of the first answered probe after it; zero when none was
	// answered after it.
	To time.Time
	// Lost counts the probes of the outage.
	Lost int
	// Duration is To - From; when To is zero, up to the send time of the result's last
	// probe plus one Interval.
	Duration time.Duration
}

// Outages returns the outages in send order; none when nothing was lost.
func (r Result) Outages() []Outage {
	var out []Outage
	open := false // the last outage in out goes on
	for _, pr := range r.Probes {
		switch {
		case !pr.Answered && !open:
			out = append(out, Outage{From: pr.Sent, Lost: 1})
			open = true
		case !pr.Answered:
			out[len(out)-1].Lost++
		case open:
			o := &out[len(out)-1]
			o.To = pr.Sent
			o.Duration = o.To.Sub(o.From)
			open = false
		}
	}
	if open {
		o := &out[len(out)-1]
		o.Duration = r.Probes[len(r.Probes)-1].Sent.Add(r.Interval).Sub(o.From)
	}
	return out
}

// Downtime is the Duration of the longest outage; zero when nothing was lost.
func (r Result) Downtime() time.Duration {
	o, _ := r.longest()
	return o.Duration
}

// longest returns the longest outage (the first of equals), and false if there is none.
func (r Result) longest() (Outage, bool) {
	var best Outage
	found := false
	for _, o := range r.Outages() {
		if !found || o.Duration > best.Duration {
			best, found = o, true
		}
	}
	return best, found
}

// LongestSilence is the longest time between the arrival of two consecutive replies,
// late ones included; zero with fewer than two replies. It shows an outage that
// Downtime misses: probes held in a queue during the outage (for example the
// neighbour queue of a host that lost the target's MAC address) and answered in a
// burst within Timeout count as answered, with long round trips, but no reply
// arrived while they were held.
func (r Result) LongestSilence() time.Duration {
	var arrivals []time.Time
	for _, pr := range r.Probes {
		if pr.Answered || pr.Late {
			arrivals = append(arrivals, pr.Sent.Add(pr.RTT))
		}
	}
	slices.SortFunc(arrivals, time.Time.Compare)
	var longest time.Duration
	for i := 1; i < len(arrivals); i++ {
		longest = max(longest, arrivals[i].Sub(arrivals[i-1]))
	}
	return longest
}

// Between returns the result restricted to the probes sent in [from, to), with the
// counts of those probes; for example the window around a migration's switchover.
func (r Result) Between(from, to time.Time) Result {
	var probes []Probe
	for _, pr := range r.Probes {
		if !pr.Sent.Before(from) && pr.Sent.Before(to) {
			probes = append(probes, pr)
		}
	}
	return newResult(r.Target, r.Interval, probes)
}

// RTT returns the minimum, median (the mean of the two middle values for an even count)
// and maximum round trip time of the answered probes; zeros when none was answered.
func (r Result) RTT() (lo, median, hi time.Duration) {
	var rtts []time.Duration
	for _, pr := range r.Probes {
		if pr.Answered {
			rtts = append(rtts, pr.RTT)
		}
	}
	n := len(rtts)
	if n == 0 {
		return 0, 0, 0
	}
	slices.Sort(rtts)
	median = rtts[n/2]
	if n%2 == 0 {
		median = (rtts[n/2-1] + rtts[n/2]) / 2
	}
	return rtts[0], median, rtts[n-1]
}

// Spacing returns the mean and the largest time between the sending of consecutive
// probes: how closely the run kept to its Interval. Only pairs of probes that are
// both in the result count. Zeros when there is no such pair.
func (r Result) Spacing() (mean, largest time.Duration) {
	var sum time.Duration
	pairs := 0
	for i := 1; i < len(r.Probes); i++ {
		a, b := r.Probes[i-1], r.Probes[i]
		if b.Seq != a.Seq+1 {
			continue
		}
		gap := b.Sent.Sub(a.Sent)
		sum += gap
		largest = max(largest, gap)
		pairs++
	}
	if pairs == 0 {
		return 0, 0
	}
	return sum / time.Duration(pairs), largest
}

// String is a one-line summary, such as
//
//	10.66.10.5: 812 sent, 801 received, 11 lost (1.4%), longest outage 120ms (11 probes), rtt min/median/max 0.3/0.6/4.1 ms
//
// with the late replies, send errors and duplicates added when there are any.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d sent, %d received, %d lost", r.Target, r.Sent, r.Received, r.Lost)
	if r.Sent > 0 {
		fmt.Fprintf(&b, " (%.1f%%)", 100*float64(r.Lost)/float64(r.Sent))
	}
	if r.Late > 0 {
		fmt.Fprintf(&b, ", %d late", r.Late)
	}
	if r.SendErrors > 0 {
		fmt.Fprintf(&b, ", %d send errors", r.SendErrors)
	}
	if r.Duplicates > 0 {
		fmt.Fprintf(&b, ", %d duplicates", r.Duplicates)
	}
	if o, ok := r.longest(); ok {
		fmt.Fprintf(&b, ", longest outage %s (%d probes)", roundDuration(o.Duration), o.Lost)
	} else {
		b.WriteString(", no outage")
	}
	if r.Received > 0 {
		lo, median, hi := r.RTT()
		fmt.Fprintf(&b, ", rtt min/median/max %s/%s/%s ms", millis(lo), millis(median), millis(hi))
	}
	return b.String()
}

// roundDuration rounds d for display: to the millisecond from 10 ms, else to the
// microsecond.
func roundDuration(d time.Duration) time.Duration {
	if d >= 10*time.Millisecond {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}

// millis formats d in milliseconds with about three significant digits, and no more
// decimals than microseconds: 0.046, 0.6, 4.1, 12.3, 1234.
func millis(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	decimals := 3
	if ms > 0 {
		decimals = min(max(2-int(math.Floor(math.Log10(ms))), 0), 3)
	}
	scale := math.Pow10(decimals)
	return strconv.FormatFloat(math.Round(ms*scale)/scale, 'f', -1, 64)
}
