package kubelet

import (
	"encoding/json"
	"testing"
	"time"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// A migration's figures reach the pod at most every progressEvery; a change of its state
// (started, paused for the switchover, completed, failed) at once.
func TestProgressWait(t *testing.T) {
	p := &process{}
	t0 := time.Unix(1000, 0)
	prog := func(status string, sent int64) *v1alpha2.MigrationProgress {
		return &v1alpha2.MigrationProgress{URI: "tcp:10.0.0.2:4000", Status: status, TransferredBytes: sent}
	}
	written := func(m *v1alpha2.MigrationProgress) string { b, _ := json.Marshal(m); return string(b) }

	for _, tc := range []struct {
		name    string
		written string
		now     *v1alpha2.MigrationProgress
		at      time.Duration
		want    time.Duration
	}{
		{"first report", "", prog("active", 1), 0, 0},
		{"figures 100 ms later", written(prog("active", 1)), prog("active", 2), 100 * time.Millisecond, 400 * time.Millisecond},
		{"figures 300 ms later", written(prog("active", 1)), prog("active", 3), 300 * time.Millisecond, 200 * time.Millisecond},
		{"figures after progressEvery", written(prog("active", 1)), prog("active", 4), 500 * time.Millisecond, 0},
		{"figures right after that", written(prog("active", 4)), prog("active", 5), 600 * time.Millisecond, 400 * time.Millisecond},
		{"paused for the switchover", written(prog("active", 4)), prog("device", 6), 650 * time.Millisecond, 0},
		{"completed", written(prog("device", 6)), prog("completed", 7), 700 * time.Millisecond, 0},
		{"another migration", written(prog("completed", 7)), &v1alpha2.MigrationProgress{URI: "tcp:10.0.0.3:4000", Status: "completed"}, 750 * time.Millisecond, 0},
	} {
		if got := p.progressWait(tc.written, tc.now, t0.Add(tc.at)); got != tc.want {
			t.Errorf("%s: wait %v, want %v", tc.name, got, tc.want)
		}
	}
}
