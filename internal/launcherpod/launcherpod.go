// Package launcherpod reads the state of launcher pods as Ferry's controllers see it:
// ended or not and how, ready, migrated away. It holds no state and writes nothing.
package launcherpod

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Ended tells whether a pod has finished.
func Ended(p *corev1.Pod) bool {
	return p != nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed)
}

// Condition returns the pod's condition of type t, or nil.
func Condition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	if p == nil {
		return nil
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// Ready tells whether the pod's Ready condition is True (QEMU runs the guest: the
// readiness gate guest-ready).
func Ready(p *corev1.Pod) bool {
	c := Condition(p, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

// GuestRunning tells whether QEMU runs the pod's guest: the pod is Ready, or it runs and
// its node's agent has set the gate guest-ready, which a real kubelet folds into Ready
// only at its next sync of the pod (up to seconds later: a migrated VM would show as
// Starting on its new node meanwhile).
func GuestRunning(p *corev1.Pod) bool {
	if Ready(p) {
		return true
	}
	c := Condition(p, v1alpha2.PodConditionGuestReady)
	return p.Status.Phase == corev1.PodRunning && c != nil && c.Status == corev1.ConditionTrue
}

// MigratedAway tells whether a pod ended because its VM live-migrated to another pod: by
// the reason Ferry's own node agent gives, or by the launcher's exit code alone, which is
// all a real kubelet shows.
func MigratedAway(p *corev1.Pod) bool {
	if t := terminated(p); t != nil {
		return t.Reason == v1alpha2.ReasonPodMigrated || t.ExitCode == v1alpha2.LauncherExitMigrated
	}
	return false
}

// MigrationFigures reads how long the live migration a pod ended by took, and how long
// its guest was paused for it, from the launcher's termination message ("migrated to URI:
// total 1.2s, downtime 35ms, 300 MiB sent"): the figures QEMU gave the source, which the
// source's status annotation may never have carried, as the launcher exits the moment
// the migration completes. ok is false when the pod did not end so, or its message has
// no figures.
func MigrationFigures(p *corev1.Pod) (total, downtime time.Duration, ok bool) {
	if p == nil || !MigratedAway(p) {
		return 0, 0, false
	}
	return ParseMigrationSummary(terminated(p).Message)
}

// ParseMigrationSummary reads the figures of a launcher's termination message (see
// MigrationFigures).
func ParseMigrationSummary(msg string) (total, downtime time.Duration, ok bool) {
	// The URI has colons of its own: the figures follow the last ": total ".
	i := strings.LastIndex(msg, ": total ")
	if !strings.HasPrefix(msg, "migrated to ") || i < 0 {
		return 0, 0, false
	}
	totalText, rest, found := strings.Cut(msg[i+len(": total "):], ", downtime ")
	if !found {
		return 0, 0, false
	}
	downText, _, _ := strings.Cut(rest, ", ")
	var err error
	if total, err = time.ParseDuration(strings.TrimSpace(totalText)); err != nil || total <= 0 {
		return 0, 0, false
	}
	if downtime, err = time.ParseDuration(strings.TrimSpace(downText)); err != nil || downtime < 0 || downtime > total {
		return 0, 0, false
	}
	return total, downtime, true
}

// Superseded tells whether a pod ended because a newer instance of its VM took the disk
// lease: that instance is the VM now.
func Superseded(p *corev1.Pod) bool {
	if t := terminated(p); t != nil {
		return t.Reason == v1alpha2.ReasonSuperseded || t.ExitCode == v1alpha2.LauncherExitSuperseded
	}
	return false
}

// Unschedulable returns the scheduler's message when it could not place the pod.
func Unschedulable(p *corev1.Pod) (string, bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return c.Message, true
		}
	}
	return "", false
}

// EndMessage says why a pod ended (or is going), from its container's termination state.
func EndMessage(p *corev1.Pod) string {
	if p == nil {
		return "the pod is gone"
	}
	if p.Status.Reason == v1alpha2.ReasonNodeFenced {
		return p.Status.Message
	}
	if t := terminated(p); t != nil {
		msg := strings.TrimSpace(t.Message)
		if msg == "" {
			msg = t.Reason
		}
		return fmt.Sprintf("launcher exited with code %d: %s", t.ExitCode, msg)
	}
	if p.DeletionTimestamp != nil {
		return "the pod is being deleted"
	}
	if p.Status.Message != "" {
		return p.Status.Message
	}
	return string(p.Status.Phase)
}

func terminated(p *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, cs := range p.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			return t
		}
	}
	return nil
}

// IndexVM is the cache index of launcher pods by the VM they run (their label
// v1alpha2.LabelVMName): a lookup instead of a scan of every pod per reconcile.
const IndexVM = "ferry.vmName"

// Index registers IndexVM with a manager's field indexer.
func Index(ctx context.Context, fi client.FieldIndexer) error {
	return fi.IndexField(ctx, &corev1.Pod{}, IndexVM, func(o client.Object) []string {
		if vm := o.GetLabels()[v1alpha2.LabelVMName]; vm != "" {
			return []string{vm}
		}
		return nil
	})
}

// NodeReachableOutdated tells whether the VM's NodeReachable condition is about a pod that
// is gone: the VM has no live pod (active), or one made after the condition was set (its
// restart elsewhere). The fencing controller keeps the condition otherwise, and leaves
// these cases to the VM controller's own status write (vm/status.go).
func NodeReachableOutdated(conditions []metav1.Condition, active *corev1.Pod) bool {
	c := meta.FindStatusCondition(conditions, v1alpha2.VMConditionNodeReachable)
	return c != nil && (active == nil || active.CreationTimestamp.After(c.LastTransitionTime.Time))
}
