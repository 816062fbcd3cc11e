package migration

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestRecordFigures: a completed migration's transfer time and downtime come from the
// source's report or, when the source's launcher exited before that was relayed, from its
// termination message, seen at a later look; once known they stay.
func TestRecordFigures(t *testing.T) {
	migrated := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: v1alpha2.ReasonPodMigrated, ExitCode: v1alpha2.LauncherExitMigrated,
			Message: "migrated to tcp:10.66.0.3:4000: total 1.25s, downtime 41ms, 300 MiB sent"}}}}}}
	running := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}

	ms := &v1alpha2.OperationMigrationStatus{}
	recordFigures(ms, running, v1alpha2.MigrationProgress{Status: "active"})
	if ms.TransferMs != 0 || ms.DowntimeMs != 0 {
		t.Fatalf("figures before any are known: %+v", ms)
	}
	recordFigures(ms, nil, v1alpha2.MigrationProgress{})
	recordFigures(ms, migrated, v1alpha2.MigrationProgress{Status: "active"})
	if ms.TransferMs != 1250 || ms.DowntimeMs != 41 {
		t.Fatalf("from the source's termination message: %+v", ms)
	}
	recordFigures(ms, nil, v1alpha2.MigrationProgress{Status: "completed", TotalTimeMs: 9, DowntimeMs: 9})
	if ms.TransferMs != 1250 || ms.DowntimeMs != 41 {
		t.Fatalf("known figures overwritten: %+v", ms)
	}

	ms = &v1alpha2.OperationMigrationStatus{}
	recordFigures(ms, migrated, v1alpha2.MigrationProgress{Status: "completed", TotalTimeMs: 1300, DowntimeMs: 44})
	if ms.TransferMs != 1300 || ms.DowntimeMs != 44 {
		t.Fatalf("from the source's report: %+v", ms)
	}
}
