package migration

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// An operation's status.progress, in percent, as Deckhouse reports a migration's
// (docs/internal/vmop_migration_lifecycle.md of deckhouse/virtualization): fixed values
// for the steps around the transfer, and an estimate in syncMin..syncMax while memory is
// copied. Nothing here is a measured fraction of the time left: it is a gauge for people
// that only moves forward.
const (
	progressPending         = 0
	progressScheduling      = 2
	progressPreparing       = 3
	syncMin                 = 10
	bulkMax                 = 45 // the first pass over memory ends here
	syncMax                 = 90
	progressSourceSuspended = 91
	progressTargetResumed   = 92
	progressCompleted       = 100
)

// fixedProgress is the progress of each reason that has a fixed one; a step with a reason
// not listed (Failed, Aborted, NotConverging) keeps the progress it had.
var fixedProgress = map[string]int{
	v1alpha2.ReasonMigrationPending:    progressPending,
	v1alpha2.ReasonWaitingForSyncSlot:  progressPending,
	v1alpha2.ReasonTargetScheduling:    progressScheduling,
	v1alpha2.ReasonTargetUnschedulable: progressScheduling,
	v1alpha2.ReasonTargetPreparing:     progressPreparing,
	v1alpha2.ReasonSyncing:             syncMin,
	v1alpha2.ReasonSourceSuspended:     progressSourceSuspended,
	v1alpha2.ReasonTargetResumed:       progressTargetResumed,
	v1alpha2.ReasonMigrationCompleted:  progressCompleted,
}

// progressAfter is the operation's progress after step s, given what it was (cur): the
// step's own estimate or its reason's fixed value, never less than before.
func progressAfter(s step, cur string) string {
	prev, known := parsePercent(cur)
	p, fixed := fixedProgress[s.reason]
	switch {
	case s.opPhase == v1alpha2.OpCompleted:
		p = progressCompleted
	case s.progress > 0:
		p = s.progress
	case !fixed && known:
		return cur
	}
	if known && prev > p {
		p = prev
	}
	return strconv.Itoa(p) + "%"
}

// parsePercent reads "NN%"; anything else (the human text of older Ferry versions, "")
// is unknown.
func parsePercent(s string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if err != nil || !strings.HasSuffix(s, "%") || n < 0 || n > 100 {
		return 0, false
	}
	return n, true
}

// syncProgress estimates how far a transfer is, in syncMin..syncMax, in the manner of
// Deckhouse's sync strategy: during the first pass over memory (bulk, up to bulkMax) from
// the share of memory sent; once QEMU copies pages dirtied meanwhile (iterative, up to
// syncMax) from how close the remaining memory is to what it can send in one last pause,
// on a log scale. A part that grows with time keeps the gauge moving while the metrics
// stand still. prev is the progress shown so far: the result is never below it.
//
// Deckhouse keeps a smoothed history per operation in the controller's memory and limits
// each step; this reads only the source's latest report and prev, so a restarted
// controller resumes where the status says. (A step limit would not hold here anyway: the
// operation's own status write wakes the next reconcile at once.)
func syncProgress(prev int, p v1alpha2.MigrationProgress, elapsed time.Duration) int {
	prev = max(prev, syncMin)
	total := float64(max(p.TotalBytes, 1))
	sec := max(elapsed.Seconds(), 0)
	var target, ceiling float64
	if p.DirtySyncCount <= 1 {
		// First pass: QEMU syncs the dirty bitmap once at the start, again after each pass.
		metric := syncMin + (bulkMax-syncMin)*clamp(float64(p.TransferredBytes)/total, 0, 1)
		byTime := math.Min(bulkMax, syncMin+sec*0.55)
		target, ceiling = 0.8*metric+0.2*byTime, bulkMax
	} else {
		// Iterative: the remaining memory shrinks towards what one pause sends (here 5% of
		// memory, as Deckhouse's threshold), or it does not converge.
		threshold := math.Max(total*0.05, 1)
		remaining := math.Max(float64(p.RemainingBytes), threshold)
		ratio := 1.0
		if base := math.Log(total / threshold); base > 0 {
			ratio = clamp(1-math.Log(remaining/threshold)/base, 0, 1)
		}
		metric := bulkMax + (syncMax-5-bulkMax)*ratio
		throttle := clamp(float64(p.ThrottlePercent)/100, 0, 1)
		byTime := math.Min(syncMax, bulkMax+sec*(0.022+throttle*0.0012))
		target, ceiling = 0.76*metric+0.24*byTime, syncMax
	}
	return max(prev, int(math.Min(target, ceiling)))
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

// notConvergingWindow is how long the least memory left to send may stand still at
// maximum throttle before a migration shows NotConverging (Deckhouse's 10 s).
const notConvergingWindow = 10 * time.Second

// notConverging records in ms the least memory left to send once QEMU copies dirtied pages
// again, and says, as Deckhouse does, whether the migration is not converging: that least
// has not improved for notConvergingWindow while the guest's CPU is throttled all it can
// be (without auto-converge, nothing more is tried). The launcher's progress timeout ends
// such a migration later; this says so meanwhile.
func notConverging(ms *v1alpha2.OperationMigrationStatus, p v1alpha2.MigrationProgress, now time.Time) bool {
	if p.DirtySyncCount <= 1 || p.RemainingBytes <= 0 {
		return false
	}
	if ms.MinRemainingTime == nil || p.RemainingBytes < ms.MinRemainingBytes {
		ms.MinRemainingBytes, ms.MinRemainingTime = p.RemainingBytes, &metav1.Time{Time: now}
		return false
	}
	atMax := !ms.AutoConverge || p.ThrottlePercent >= 99
	return atMax && now.Sub(ms.MinRemainingTime.Time) >= notConvergingWindow
}

// sentText says how much of the guest's memory the source has sent to node, for the
// message.
func sentText(p v1alpha2.MigrationProgress, node string) string {
	if p.TotalBytes <= 0 {
		return fmt.Sprintf("transfer to node %s starting", node)
	}
	done := p.TotalBytes - p.RemainingBytes
	msg := fmt.Sprintf("%d of %d MiB sent, %d MiB remaining (%d MiB transferred in %.1fs", done>>20, p.TotalBytes>>20, p.RemainingBytes>>20, p.TransferredBytes>>20, float64(p.TotalTimeMs)/1000)
	if p.DirtySyncCount > 1 {
		msg += fmt.Sprintf(", pass %d", p.DirtySyncCount)
	}
	msg += ")"
	if p.ThrottlePercent > 0 {
		msg += fmt.Sprintf(", guest CPU throttled %d%%", p.ThrottlePercent)
	}
	return msg
}
