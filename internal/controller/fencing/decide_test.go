package fencing

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
)

func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	fast := deckhousev1.TimingFor(5 * time.Second) // lease every 1 s, fenced after 7 s
	armed := func(name string, age time.Duration) NodeState {
		return NodeState{Name: name, Group: "worker", GroupFencing: true, Armed: &fast, LeaseInterval: fast.LeaseInterval, Renewed: now.Add(-age)}
	}
	cases := []struct {
		name  string
		nodes []NodeState
		want  map[string]Action
		storm bool
		why   string
	}{
		{name: "fresh leases", nodes: []NodeState{armed("a", 500*time.Millisecond), armed("b", 0), armed("c", 2*time.Second)},
			want: map[string]Action{"a": Reachable, "b": Reachable, "c": Reachable}},
		{name: "stale but within timeout plus margin", nodes: []NodeState{armed("a", 3*time.Second), armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Pending}, why: "fenced 7s after its last renewal"},
		{name: "never sooner than timeout plus margin", nodes: []NodeState{armed("a", 6999*time.Millisecond), armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Pending}},
		{name: "past timeout plus margin", nodes: []NodeState{armed("a", 7*time.Second), armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Fence}, why: "it has surely fenced itself"},
		{name: "group without fencing", nodes: []NodeState{{Name: "a", Group: "worker", LeaseInterval: time.Second, Renewed: now.Add(-time.Minute)}, armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Unreachable}, why: "NodeGroup worker has no fencing"},
		{name: "disarmed for maintenance", nodes: []NodeState{func() NodeState { n := armed("a", time.Minute); n.Disarmed = "firmware"; return n }(), armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Unreachable}, why: "disarmed (firmware)"},
		{name: "watchdog never armed", nodes: []NodeState{func() NodeState { n := armed("a", time.Minute); n.Armed = nil; return n }(), armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Unreachable}, why: "never reported an armed watchdog"},
		{name: "agent without a watchdog device", nodes: []NodeState{func() NodeState {
			n := armed("a", time.Minute)
			n.Armed, n.NotFenceable = nil, "NoWatchdogDevice: no watchdog device"
			return n
		}(), armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Unreachable}, why: "it cannot be fenced, its agent says (NoWatchdogDevice: no watchdog device)"},
		// An earlier agent's armed timing is still on the Node; the agent now running has no
		// watchdog (or could not arm it): nothing would have stopped the node's VMs.
		{name: "no watchdog now, an armed timing left from before", nodes: []NodeState{func() NodeState {
			n := armed("a", time.Minute)
			n.NotFenceable = "WatchdogFailed: device or resource busy"
			return n
		}(), armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Unreachable}, why: "its VMs are not started elsewhere"},
		{name: "no watchdog, reachable", nodes: []NodeState{func() NodeState {
			n := armed("a", 0)
			n.Armed, n.NotFenceable = nil, "NoWatchdogDevice: no watchdog device"
			return n
		}(), armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Reachable}},
		{name: "plain kubelet gets the node monitor's grace", nodes: []NodeState{{Name: "a", Renewed: now.Add(-30 * time.Second)}},
			want: map[string]Action{"a": Reachable}},
		{name: "storm: two of three unreachable", nodes: []NodeState{armed("a", time.Minute), armed("b", time.Minute), armed("c", 0)},
			want: map[string]Action{"a": Paused, "b": Paused, "c": Reachable}, storm: true, why: "2 of 3 nodes are unreachable"},
		{name: "one of three is under the guard", nodes: []NodeState{armed("a", time.Minute), armed("b", 0), armed("c", 0)},
			want: map[string]Action{"a": Fence}},
		{name: "one of two is over it", nodes: []NodeState{armed("a", time.Minute), armed("b", 0)},
			want: map[string]Action{"a": Paused}, storm: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			verdicts, _, storm := Decide(now, tc.nodes, DefaultMaxUnreachable)
			if storm != tc.storm {
				t.Errorf("storm = %v, want %v", storm, tc.storm)
			}
			for _, v := range verdicts {
				want, ok := tc.want[v.Node]
				if !ok {
					want = Reachable
				}
				if v.Action != want {
					t.Errorf("node %s: %s, want %s (%s)", v.Node, v.Action, want, v.Why)
				}
				if tc.why != "" && v.Action != Reachable && !strings.Contains(v.Why, tc.why) {
					t.Errorf("node %s: why %q does not say %q", v.Node, v.Why, tc.why)
				}
			}
		})
	}
}

func TestTiming(t *testing.T) {
	for _, tc := range []struct {
		profile  deckhousev1.FencingProfile
		timeout  time.Duration
		want     time.Duration
		interval time.Duration
	}{
		{profile: deckhousev1.ProfileCritical, want: 2 * time.Second, interval: 500 * time.Millisecond},
		{profile: deckhousev1.ProfileFast, want: 5 * time.Second, interval: time.Second},
		{profile: deckhousev1.ProfileBalanced, want: 10 * time.Second, interval: 2 * time.Second},
		{profile: deckhousev1.ProfileTolerant, want: 20 * time.Second, interval: 4 * time.Second},
		{want: 60 * time.Second, interval: 10 * time.Second},
		{timeout: time.Second, want: time.Second, interval: 500 * time.Millisecond},
	} {
		spec := deckhousev1.FencingSpec{Mode: deckhousev1.FencingWatchdog, Watchdog: &deckhousev1.WatchdogSpec{Profile: tc.profile}}
		if tc.timeout > 0 {
			spec.Watchdog.Timeout = &metav1.Duration{Duration: tc.timeout}
		}
		got := spec.Timing()
		if got.Timeout != tc.want || got.LeaseInterval != tc.interval || got.Margin != 2*tc.interval {
			t.Errorf("%q/%s: %+v, want timeout %s interval %s margin %s", tc.profile, tc.timeout, got, tc.want, tc.interval, 2*tc.interval)
		}
		// The node has surely fired its watchdog (last feed at most one interval after the
		// renewal) before the controller fences it.
		if got.LeaseInterval+got.Timeout >= got.FenceAfter() {
			t.Errorf("%q: watchdog may fire at %s, fencing at %s", tc.profile, got.LeaseInterval+got.Timeout, got.FenceAfter())
		}
	}
}
