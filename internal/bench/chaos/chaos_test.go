package chaos

import (
	"slices"
	"testing"
	"time"
)

// A trial's plan depends only on the seed and its number, so one trial replays alone.
func TestChaosPlanReplays(t *testing.T) {
	seen := map[string]bool{}
	for i := range 200 {
		a := plan(7, i, 4*time.Second, 12*time.Second)
		b := plan(7, i, 4*time.Second, 12*time.Second)
		if a.op != b.op || a.fault != b.fault || a.delay != b.delay || a.hold != b.hold {
			t.Fatalf("trial %d planned twice differently: %+v %+v", i, a, b)
		}
		if !slices.Contains(chaosOps, a.op) || !slices.Contains(chaosFaults, a.fault) || a.delay < 0 || a.delay >= 4*time.Second || a.hold < time.Second || a.hold >= 12*time.Second {
			t.Fatalf("trial %d: %+v", i, a)
		}
		seen[a.op+"+"+a.fault] = true
	}
	// 200 trials cover every operation with every fault.
	if want := len(chaosOps) * len(chaosFaults); len(seen) != want {
		t.Errorf("200 trials drew %d of the %d operation+fault pairs", len(seen), want)
	}
	if c := plan(8, 0, 4*time.Second, 12*time.Second); c.delay == plan(7, 0, 4*time.Second, 12*time.Second).delay {
		t.Errorf("seeds 7 and 8 drew the same delay for trial 0")
	}
}
