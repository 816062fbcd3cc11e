package migration

import (
	"testing"
	"time"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestProgressAfter(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    step
		cur  string
		want string
	}{
		{"new operation waits for a slot", step{opPhase: v1alpha2.OpPending, reason: v1alpha2.ReasonWaitingForSyncSlot}, "", "0%"},
		{"scheduling", step{opPhase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonTargetScheduling}, "0%", "2%"},
		{"unschedulable while in progress", step{opPhase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonTargetUnschedulable}, "2%", "2%"},
		{"preparing", step{opPhase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonTargetPreparing}, "2%", "3%"},
		{"transfer starts at the floor of syncing", step{opPhase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonSyncing}, "3%", "10%"},
		{"a transfer's estimate", step{opPhase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonSyncing, progress: 37}, "20%", "37%"},
		{"never back", step{opPhase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonSyncing}, "55%", "55%"},
		{"source suspended", step{opPhase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonSourceSuspended}, "88%", "91%"},
		{"target resumed", step{opPhase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonTargetResumed}, "91%", "92%"},
		{"completed", step{opPhase: v1alpha2.OpCompleted, reason: v1alpha2.ReasonMigrationCompleted}, "92%", "100%"},
		{"failure keeps what it had", step{opPhase: v1alpha2.OpFailed, reason: v1alpha2.ReasonMigrationFailed}, "64%", "64%"},
		{"not converging keeps what it had", step{opPhase: v1alpha2.OpFailed, reason: v1alpha2.ReasonNotConverging}, "88%", "88%"},
		{"refused before anything", step{opPhase: v1alpha2.OpFailed, reason: v1alpha2.ReasonNotApplicableState}, "", "0%"},
		{"refused target", step{opPhase: v1alpha2.OpFailed, reason: v1alpha2.ReasonTargetUnschedulable}, "", "2%"},
		{"an older Ferry's text is replaced", step{opPhase: v1alpha2.OpInProgress, reason: v1alpha2.ReasonSyncing, progress: 30}, "12% of 128 MiB sent", "30%"},
	} {
		if got := progressAfter(tc.s, tc.cur); got != tc.want {
			t.Errorf("%s: progressAfter(%s, %q) = %q, want %q", tc.name, tc.s.reason, tc.cur, got, tc.want)
		}
	}
}

func TestSyncProgress(t *testing.T) {
	const gib = 1 << 30
	at := func(prev int, p v1alpha2.MigrationProgress, sec int) int {
		return syncProgress(prev, p, time.Duration(sec)*time.Second)
	}
	bulk := func(sent int64) v1alpha2.MigrationProgress {
		return v1alpha2.MigrationProgress{TotalBytes: gib, TransferredBytes: sent, RemainingBytes: gib - sent, DirtySyncCount: 1}
	}
	iter := func(remaining int64) v1alpha2.MigrationProgress {
		return v1alpha2.MigrationProgress{TotalBytes: gib, TransferredBytes: gib + 100<<20, RemainingBytes: remaining, DirtySyncCount: 3}
	}
	if got := at(0, v1alpha2.MigrationProgress{}, 0); got != syncMin {
		t.Errorf("no report yet: %d%%, want %d%%", got, syncMin)
	}
	// The first pass stays within 10..45 however long it takes, and grows with what was sent.
	prev := 0
	for _, sent := range []int64{0, gib / 4, gib / 2, 3 * gib / 4, gib} {
		got := at(0, bulk(sent), 5)
		if got < prev || got < syncMin || got > bulkMax {
			t.Errorf("first pass, %d MiB of 1024 sent: %d%% (before: %d%%)", sent>>20, got, prev)
		}
		prev = got
	}
	if got := at(0, bulk(gib), 3600); got != bulkMax {
		t.Errorf("first pass done after an hour: %d%%, want %d%%", got, bulkMax)
	}
	// Later passes: above the first, below 90, higher as less remains.
	prev = bulkMax
	for _, remaining := range []int64{gib / 2, gib / 8, gib / 32, 10 << 20} {
		got := at(bulkMax, iter(remaining), 10)
		if got < prev || got > syncMax {
			t.Errorf("iterating, %d MiB remaining: %d%% (before: %d%%)", remaining>>20, got, prev)
		}
		prev = got
	}
	// Deckhouse's weights put the top of the metric at 85% and of time at 90%.
	if got := at(0, iter(1<<20), 1<<20); got < 85 || got > syncMax {
		t.Errorf("iterating for days with nothing left: %d%%, want 85-%d%%", got, syncMax)
	}
	// Never below what was shown, even when QEMU reports more to send again.
	if got := at(70, iter(gib/2), 1); got != 70 {
		t.Errorf("more dirtied again after 70%%: %d%%, want 70%%", got)
	}
}

// FuzzSyncProgress: whatever a source's agent reports (it writes the report; a fault or
// an older agent may leave fields out), the estimate stays in 10..90% and never goes
// below what was shown.
func FuzzSyncProgress(f *testing.F) {
	f.Add(0, int64(1<<30), int64(1<<29), int64(1<<29), int64(1), int64(0), int64(5))
	f.Add(50, int64(0), int64(-1), int64(1<<40), int64(9), int64(99), int64(-3))
	f.Fuzz(func(t *testing.T, prev int, total, remaining, transferred, dirty, throttle, sec int64) {
		if prev < 0 || prev > syncMax {
			return
		}
		p := v1alpha2.MigrationProgress{TotalBytes: total, RemainingBytes: remaining, TransferredBytes: transferred, DirtySyncCount: dirty, ThrottlePercent: throttle}
		got := syncProgress(prev, p, time.Duration(sec)*time.Second)
		if got < prev || got < syncMin || got > syncMax {
			t.Fatalf("syncProgress(%d, %+v, %ds) = %d", prev, p, sec, got)
		}
	})
}

// TestNotConverging: Deckhouse's in-progress NotConverging: once pages are copied again,
// the least memory left that does not improve for 10 s at maximum throttle (or without
// auto-converge).
func TestNotConverging(t *testing.T) {
	t0 := time.Unix(1000, 0)
	iter := func(remaining, throttle int64) v1alpha2.MigrationProgress {
		return v1alpha2.MigrationProgress{TotalBytes: 1 << 30, RemainingBytes: remaining, DirtySyncCount: 5, ThrottlePercent: throttle}
	}
	for _, tc := range []struct {
		name         string
		autoConverge bool
		steps        []v1alpha2.MigrationProgress
		at           []time.Duration
		want         []bool
	}{
		{"first pass never", false,
			[]v1alpha2.MigrationProgress{{TotalBytes: 1 << 30, RemainingBytes: 1 << 29, DirtySyncCount: 1}, {TotalBytes: 1 << 30, RemainingBytes: 1 << 29, DirtySyncCount: 1}},
			[]time.Duration{0, time.Minute}, []bool{false, false}},
		{"shrinking converges", false,
			[]v1alpha2.MigrationProgress{iter(100<<20, 0), iter(80<<20, 0), iter(60<<20, 0)},
			[]time.Duration{0, 9 * time.Second, 18 * time.Second}, []bool{false, false, false}},
		{"standing still without auto-converge", false,
			[]v1alpha2.MigrationProgress{iter(100<<20, 0), iter(120<<20, 0), iter(110<<20, 0)},
			[]time.Duration{0, 5 * time.Second, 11 * time.Second}, []bool{false, false, true}},
		{"throttling still has room", true,
			[]v1alpha2.MigrationProgress{iter(100<<20, 20), iter(120<<20, 50)},
			[]time.Duration{0, 30 * time.Second}, []bool{false, false}},
		{"at maximum throttle", true,
			[]v1alpha2.MigrationProgress{iter(100<<20, 20), iter(120<<20, 99)},
			[]time.Duration{0, 30 * time.Second}, []bool{false, true}},
	} {
		ms := &v1alpha2.OperationMigrationStatus{AutoConverge: tc.autoConverge}
		for i, p := range tc.steps {
			if got := notConverging(ms, p, t0.Add(tc.at[i])); got != tc.want[i] {
				t.Errorf("%s, step %d (%d MiB left at %s): %v, want %v", tc.name, i, p.RemainingBytes>>20, tc.at[i], got, tc.want[i])
			}
		}
	}
}
