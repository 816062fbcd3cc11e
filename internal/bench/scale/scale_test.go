package scale

import (
	"maps"
	"testing"
)

// TestCountRequests sums apiserver_request_total and the writes among it, less the
// nodes' Lease renewals.
func TestCountRequests(t *testing.T) {
	m := `# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",verb="GET",resource="pods"} 10
apiserver_request_total{code="201",component="apiserver",verb="POST",resource="pods"} 3
apiserver_request_total{code="200",component="apiserver",verb="PATCH",resource="pods",subresource="status"} 2.5e+01
apiserver_request_total{code="200",component="apiserver",verb="WATCH",resource="pods"} 4
apiserver_request_total{code="200",component="apiserver",verb="DELETE",resource="pods"} 1
apiserver_request_total{code="200",component="apiserver",verb="PUT",resource="leases"} 7
apiserver_request_duration_seconds_count{verb="PATCH"} 99
`
	all, writes := countRequests(m)
	want := map[string]float64{"pods": 4, "pods/status": 25}
	if all != 50 || !maps.Equal(writes, want) {
		t.Errorf("countRequests = %v requests, writes %v; want 50, %v (Lease renewals not counted as writes)", all, writes, want)
	}
}

func TestReconcileTimes(t *testing.T) {
	for _, tc := range []struct {
		buckets map[string]float64
		want    string
	}{
		{map[string]float64{"0.005": 50, "0.01": 90, "0.1": 99, "1": 100, "+Inf": 100}, "p50 ≤ 5ms, p99 ≤ 100ms (100 reconciles)"},
		{map[string]float64{"0.005": 10, "0.5": 20, "+Inf": 100}, "p50 > largest bucket, p99 > largest bucket (100 reconciles)"},
		{map[string]float64{"0.005": 0, "+Inf": 0}, "-"},
		{map[string]float64{}, "-"},
	} {
		if got := quantiles(tc.buckets); got != tc.want {
			t.Errorf("quantiles(%v) = %q, want %q", tc.buckets, got, tc.want)
		}
	}
	l := ControlPlaneLoad{CPUPercent: 37.4, RSS: 301 << 20, RequestsPerSec: 120.6,
		Reconcile: reconcileTimes(map[string]float64{"0.01": 3, "+Inf": 4})}
	if got, want := l.String(), "controller CPU 37% of a core, RSS 301 MiB; apiserver 121 requests/s; VM reconcile p50 ≤ 10ms, p99 > largest bucket (4 reconciles)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
