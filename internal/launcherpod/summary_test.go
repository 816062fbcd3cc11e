package launcherpod

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestParseMigrationSummary(t *testing.T) {
	for _, c := range []struct {
		msg             string
		total, downtime time.Duration
		ok              bool
	}{
		{"migrated to tcp:10.66.0.12:41709: total 15.505s, downtime 46ms, 321 MiB sent", 15505 * time.Millisecond, 46 * time.Millisecond, true},
		{"migrated to tls:node-2:4444: total 900ms, downtime 0s, 12 MiB sent", 900 * time.Millisecond, 0, true},
		{"migrated to tcp:10.66.0.12:41709", 0, 0, false},                                  // no figures (status not completed)
		{"migrated to x: total 1s, downtime 2s, 1 MiB sent", 0, 0, false},                  // a downtime longer than the whole
		{"migrated to x: total -1s, downtime 0s, 1 MiB sent", 0, 0, false},                 // negative
		{"superseded: total 1s, downtime 1ms", 0, 0, false},                                // not a migration's message
		{"migrated to x: total 1s, downtime 5ms", time.Second, 5 * time.Millisecond, true}, // without the bytes
	} {
		total, downtime, ok := ParseMigrationSummary(c.msg)
		if ok != c.ok || total != c.total || downtime != c.downtime {
			t.Errorf("%q: %v %v %v, want %v %v %v", c.msg, total, downtime, ok, c.total, c.downtime, c.ok)
		}
	}
}

func TestMigrationFiguresOnlyOfMigratedPods(t *testing.T) {
	pod := func(reason string, code int32) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: reason, ExitCode: code,
				Message: "migrated to tcp:10.0.0.1:1: total 2s, downtime 30ms, 5 MiB sent"}}}}}}
	}
	if total, downtime, ok := MigrationFigures(pod(v1alpha2.ReasonPodMigrated, 0)); !ok || total != 2*time.Second || downtime != 30*time.Millisecond {
		t.Errorf("a migrated pod's figures: %v %v %v", total, downtime, ok)
	}
	if _, _, ok := MigrationFigures(pod("Error", 1)); ok {
		t.Error("figures read from a pod that did not end by migrating")
	}
	if _, _, ok := MigrationFigures(nil); ok {
		t.Error("figures from no pod")
	}
}

// FuzzParseMigrationSummary: a pod's termination message is written by its node; whatever
// it says, the parser neither panics nor returns figures out of range.
func FuzzParseMigrationSummary(f *testing.F) {
	f.Add("migrated to tcp:10.66.0.12:41709: total 15.505s, downtime 46ms, 321 MiB sent")
	f.Add("migrated to : total : total 1s, downtime , downtime 1ms")
	f.Fuzz(func(t *testing.T, msg string) {
		total, downtime, ok := ParseMigrationSummary(msg)
		if ok && (total <= 0 || downtime < 0 || downtime > total) {
			t.Fatalf("%q: total %v downtime %v", msg, total, downtime)
		}
	})
}
