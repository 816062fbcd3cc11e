package pinger

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// pattern builds a result from a string, one probe every 10 ms from t0: '.' answered
// (with a 1 ms round trip), 'x' lost, 'L' lost with a late reply, 'E' lost by a failed
// send, 'D' answered twice.
func pattern(s string) Result {
	var probes []Probe
	for i, c := range s {
		pr := Probe{Seq: i, Sent: t0.Add(time.Duration(i) * 10 * ms)}
		switch c {
		case '.':
			pr.Answered, pr.RTT = true, ms
		case 'L':
			pr.Late, pr.RTT = true, 2*time.Second
		case 'E':
			pr.SendFailed = true
		case 'D':
			pr.Answered, pr.RTT, pr.Duplicates = true, ms, 1
		}
		probes = append(probes, pr)
	}
	return newResult(netip.MustParseAddr("10.66.10.5"), 10*ms, probes)
}

func at(i int) time.Time { return t0.Add(time.Duration(i) * 10 * ms) }

func TestOutages(t *testing.T) {
	tests := []struct {
		pattern  string
		want     []Outage
		downtime time.Duration
	}{
		{"", nil, 0},
		{"....", nil, 0},
		{"..xxx..x..", []Outage{
			{From: at(2), To: at(5), Lost: 3, Duration: 30 * ms},
			{From: at(7), To: at(8), Lost: 1, Duration: 10 * ms},
		}, 30 * ms},
		// No answer after the outage: it lasts until the last probe's send time plus
		// one interval.
		{"...xxxx", []Outage{{From: at(3), Lost: 4, Duration: 40 * ms}}, 40 * ms},
		{"x", []Outage{{From: at(0), Lost: 1, Duration: 10 * ms}}, 10 * ms},
		{"x.xx.", []Outage{
			{From: at(0), To: at(1), Lost: 1, Duration: 10 * ms},
			{From: at(2), To: at(4), Lost: 2, Duration: 20 * ms},
		}, 20 * ms},
		// Late replies and failed sends are losses like any other.
		{".LxE.", []Outage{{From: at(1), To: at(4), Lost: 3, Duration: 30 * ms}}, 30 * ms},
	}
	for _, tc := range tests {
		r := pattern(tc.pattern)
		if got := r.Outages(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: outages %+v, want %+v", tc.pattern, got, tc.want)
		}
		if got := r.Downtime(); got != tc.downtime {
			t.Errorf("%q: downtime %v, want %v", tc.pattern, got, tc.downtime)
		}
	}
}

func TestLongestSilence(t *testing.T) {
	late := pattern(".L.")
	held := pattern(".....")
	held.Probes[1].RTT = 500 * ms // held in a queue, then answered within the timeout
	for _, tc := range []struct {
		name string
		r    Result
		want time.Duration
	}{
		{"nothing", pattern(""), 0},
		{"one reply", pattern("x.x"), 0},
		{"no loss", pattern("...."), 10 * ms},
		{"outage", pattern("..xxx.."), 40 * ms},
		{"late reply", late, 1989 * ms},
		{"answered in a burst", held, 469 * ms},
	} {
		if got := tc.r.LongestSilence(); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCounts(t *testing.T) {
	r := pattern(".LxE.D")
	if r.Sent != 6 || r.Received != 3 || r.Lost != 3 || r.Late != 1 || r.SendErrors != 1 || r.Duplicates != 1 {
		t.Errorf("%+v", r)
	}
}

func TestBetween(t *testing.T) {
	r := pattern("..xxx..x..")
	w := r.Between(at(2), at(6))
	if w.Sent != 4 || w.Lost != 3 || w.Received != 1 || w.Probes[0].Seq != 2 || w.Interval != r.Interval || w.Target != r.Target {
		t.Errorf("[2, 6): %+v", w)
	}
	if got := w.Outages(); len(got) != 1 || got[0].To != at(5) || got[0].Duration != 30*ms {
		t.Errorf("[2, 6): outages %+v", got)
	}
	// The window ends within the outage: it lasts to the window's last probe.
	w = r.Between(at(3), at(5))
	if got := w.Outages(); len(got) != 1 || !got[0].To.IsZero() || got[0].Lost != 2 || got[0].Duration != 20*ms {
		t.Errorf("[3, 5): outages %+v", got)
	}
	if w = r.Between(at(5), at(5)); w.Sent != 0 || len(w.Outages()) != 0 {
		t.Errorf("[5, 5): %+v", w)
	}
	if w = r.Between(at(-100), at(100)); !reflect.DeepEqual(w, r) {
		t.Errorf("everything: %+v", w)
	}
}

func TestString(t *testing.T) {
	r := pattern("..xxx.....")
	rtts := []time.Duration{300 * time.Microsecond, 500 * time.Microsecond, 600 * time.Microsecond,
		600 * time.Microsecond, 700 * time.Microsecond, ms, 4100 * time.Microsecond}
	for i, j := 0, 0; i < len(r.Probes); i++ {
		if r.Probes[i].Answered {
			r.Probes[i].RTT = rtts[j]
			j++
		}
	}
	tests := []struct {
		r    Result
		want string
	}{
		{r, "10.66.10.5: 10 sent, 7 received, 3 lost (30.0%), longest outage 30ms (3 probes), rtt min/median/max 0.3/0.6/4.1 ms"},
		{pattern(""), "10.66.10.5: 0 sent, 0 received, 0 lost, no outage"},
		{pattern("...."), "10.66.10.5: 4 sent, 4 received, 0 lost (0.0%), no outage, rtt min/median/max 1/1/1 ms"},
		{pattern("xxLEDD"), "10.66.10.5: 6 sent, 2 received, 4 lost (66.7%), 1 late, 1 send errors, 2 duplicates, longest outage 40ms (4 probes), rtt min/median/max 1/1/1 ms"},
	}
	for _, tc := range tests {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}

func TestMillis(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                          "0",
		time.Nanosecond:            "0",
		45700 * time.Nanosecond:    "0.046",
		300 * time.Microsecond:     "0.3",
		4100 * time.Microsecond:    "4.1",
		12345 * time.Microsecond:   "12.3",
		1234567 * time.Microsecond: "1235",
	} {
		if got := millis(d); got != want {
			t.Errorf("millis(%v) = %s, want %s", d, got, want)
		}
	}
}

func TestRTT(t *testing.T) {
	r := pattern("x..x..")
	for i, d := range []time.Duration{0, 4 * ms, 2 * ms, 0, 3 * ms, 1 * ms} {
		r.Probes[i].RTT = d
	}
	if lo, median, hi := r.RTT(); lo != ms || median != 2500*time.Microsecond || hi != 4*ms {
		t.Errorf("RTT = %v %v %v", lo, median, hi)
	}
	if lo, median, hi := pattern("xx").RTT(); lo != 0 || median != 0 || hi != 0 {
		t.Errorf("RTT without replies = %v %v %v", lo, median, hi)
	}
}

func TestSpacing(t *testing.T) {
	r := pattern("....")
	r.Probes[3].Sent = at(2).Add(25 * ms)
	if mean, largest := r.Spacing(); mean != 15*ms || largest != 25*ms {
		t.Errorf("Spacing = %v %v, want 15ms 25ms", mean, largest)
	}
	// A snapshot leaves out probes that await a reply: no pair spans the gap.
	r.Probes = append(r.Probes[:1], r.Probes[2:]...)
	if mean, largest := r.Spacing(); mean != 25*ms || largest != 25*ms {
		t.Errorf("Spacing with a gap = %v %v, want 25ms 25ms", mean, largest)
	}
}
