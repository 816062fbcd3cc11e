package bench

import (
	"strings"
	"testing"
	"time"
)

// TestTimelineRows: each stage's median time, by time, and the step since the row
// before; a stage no run saw is "-".
func TestTimelineRows(t *testing.T) {
	ms := time.Millisecond
	tls := []Timeline{
		{StageSeen: 10 * ms, StageTargetPod: 30 * ms, StageDone: 900 * ms},
		{StageSeen: 20 * ms, StageTargetPod: 60 * ms, StageScheduled: 70 * ms, StageDone: 1100 * ms},
		{StageSeen: 30 * ms, StageTargetPod: 50 * ms, StageDone: 1000 * ms},
	}
	rows := timelineRows(tls)
	if len(rows) != len(MigrationStages) {
		t.Fatalf("%d rows, want one per stage (%d)", len(rows), len(MigrationStages))
	}
	want := map[string][2]string{
		StageSeen:      {"20", "20"},
		StageTargetPod: {"50", "30"},
		StageScheduled: {"70", "20"},
		StageListening: {"-", "-"},
		StageDone:      {"1000", "930"}, // after target scheduled's 70
	}
	for _, r := range rows {
		if w, ok := want[r[0]]; ok && (r[1] != w[0] || r[2] != w[1]) {
			t.Errorf("stage %s: at %s step %s, want at %s step %s", r[0], r[1], r[2], w[0], w[1])
		}
	}
	tls[1][StageSeen] = 80 * ms // written after the target pod: shown in its place
	s := tls[1].String()
	if !strings.HasPrefix(s, "target pod created +60 (60), target scheduled +70 (10), vmop status written +80 (10), status written +1100 (1020)") {
		t.Errorf("String() = %q", s)
	}
}
