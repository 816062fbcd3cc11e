package failover

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	"github.com/ferryvm/ferry/internal/bench"
)

// FailoverMarks are the moments one failover passed its steps, measured from T0 (the fault
// in force) to the poll that first saw them (every bench.WatchInterval); 0 when the step
// was not seen.
type FailoverMarks struct {
	// Detected: the VM's condition NodeReachable=False with reason FencingPending first seen.
	Detected time.Duration
	// Fenced: the failed node's Node object gone (deleted, or recreated with another UID).
	Fenced time.Duration
	// PodCreated: a new launcher pod of the VM (another name than the failed one's) first
	// seen; the poll's time, as the pod's creationTimestamp has whole seconds only.
	PodCreated time.Duration
	// Scheduled: the new launcher pod first seen with a node (spec.nodeName). Should that
	// pod end or go before Running, the next new one is followed; marks already recorded
	// stay the first pod's.
	Scheduled time.Duration
	// Restarted: the new launcher pod Running.
	Restarted time.Duration
	// Booted: the first CNT line in the new instance's serial log.
	Booted time.Duration
	// VMRunning: the VM's status.phase Running on the new launcher pod's node, the moment
	// the platform reports the VM running again. Not one of the steps Phases chains: it may
	// come before or after Booted.
	VMRunning time.Duration
}

// Phase is one measured stretch of a failover; OK is false when its end was not seen.
type Phase struct {
	D  time.Duration
	OK bool
}

func (p Phase) String() string {
	if !p.OK {
		return "-"
	}
	return bench.Millis(p.D)
}

// The phases of a failover, in the order Phases returns them.
const (
	PhaseDetection = iota
	PhaseFencingWait
	PhaseNewPod
	PhaseScheduled
	PhasePodRunning
	PhaseBoot
	PhaseTotal
	phaseCount
)

var phaseNames = [phaseCount]string{"DETECTION", "FENCING WAIT", "NEW POD", "SCHEDULED", "POD RUNNING", "BOOT", "TOTAL"}

// vmRunningName heads the column of FailoverMarks.VMRunningPhase, after the phases.
const vmRunningName = "VM RUNNING"

// Phases splits the marks into detection (T0 → Detected), fencing wait (→ Fenced), new pod
// (→ PodCreated), scheduled (→ Scheduled), pod running (→ Restarted), boot (→ Booted) and
// total (T0 → Booted). A phase runs from the latest mark before it that was seen (T0 when
// none was), so a missed mark leaves one phase unknown and the next one longer, never both
// unknown. VMRunning is in none of them (see VMRunningPhase).
func (m FailoverMarks) Phases() [phaseCount]Phase {
	var out [phaseCount]Phase
	var from time.Duration
	for i, end := range []time.Duration{m.Detected, m.Fenced, m.PodCreated, m.Scheduled, m.Restarted, m.Booted} {
		if end == 0 {
			continue
		}
		out[i] = Phase{D: end - from, OK: true}
		from = end
	}
	if m.Booted != 0 {
		out[PhaseTotal] = Phase{D: m.Booted, OK: true}
	}
	return out
}

// VMRunningPhase is T0 → VMRunning: from the fault, not from the step before, as the VM's
// phase may turn Running before or after the new guest's first heartbeat.
func (m FailoverMarks) VMRunningPhase() Phase {
	return Phase{D: m.VMRunning, OK: m.VMRunning != 0}
}

// FailoverRun is what one fault did to the benchmark VM.
type FailoverRun struct {
	Fault string
	Run   int // from 1
	// From is the failed node; To the node of the new instance ("" when none came up).
	From, To string
	Marks    FailoverMarks
	// OldLast is T0 → the last heartbeat seen from the instance on the failed node
	// (negative: before T0); OldLastOK is false when none was seen after the run began.
	OldLast   time.Duration
	OldLastOK bool
	// Samples is how many times the QEMU processes were counted (every 100 ms); Double how
	// many of them found more than one QEMU of the VM.
	Samples, Double int
	// Overlaps name the instances whose heartbeats overlapped in time (each pair once).
	Overlaps []string
	// Failure says why the failover was not measured to the end ("" when it was).
	Failure string
}

// DoubleRun tells whether two instances of the VM ran at once, by the process count or by
// the guests' heartbeats.
func (r FailoverRun) DoubleRun() bool { return r.Double > 0 || len(r.Overlaps) > 0 }

// GuestGap is the outage as the guest's heartbeat shows it: the old instance's last CNT to
// the new instance's first.
func (r FailoverRun) GuestGap() Phase {
	if !r.OldLastOK || r.Marks.Booted == 0 {
		return Phase{}
	}
	return Phase{D: r.Marks.Booted - r.OldLast, OK: true}
}

// FailoverReport is what RunFailover measured, with the fencing timing in force.
type FailoverReport struct {
	// Profile is the NodeGroup's fencing profile (or its explicit timeout).
	Profile string
	Timing  deckhousev1.Timing
	Runs    []FailoverRun
}

// failoverTargets are the goals per profile: T0 → the new launcher pod Running (total
// minus the guest's boot), with zero double runs.
var failoverTargets = map[string]time.Duration{
	string(deckhousev1.ProfileCritical): 5 * time.Second,
	string(deckhousev1.ProfileFast):     15 * time.Second,
}

// failoverAnchors are published figures of other platforms to read Ferry's against.
const failoverAnchors = `Anchors (how long other platforms take):
  Proxmox VE HA                                   ~120 s until the VMs of a failed node run elsewhere
  VMware vSphere HA                               15 s to detect a failed host
  KubeVirt without node remediation               > 5 min (VMs of a lost node are not restarted by themselves)
  Red Hat (OpenShift Virtualization), documented  ~9 min with node remediation
  Deckhouse, Critical profile                     3.5–4 s to detect`

// FailoverTable writes one row per run, the medians per fault, the timing, the anchors and
// the target's verdict.
func FailoverTable(w io.Writer, r FailoverReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "FAULT\tRUN\tNODES\t%s\t%s\tOLD LAST CNT\tGUEST GAP\t2×QEMU SAMPLES\tCNT ORDER\tRESULT\n", strings.Join(phaseNames[:], "\t"), vmRunningName)
	for _, run := range r.Runs {
		row := []string{run.Fault, fmt.Sprint(run.Run), run.From + " → " + bench.OrDash(run.To)}
		for _, p := range run.Marks.Phases() {
			row = append(row, p.String())
		}
		row = append(row, run.Marks.VMRunningPhase().String())
		old := Phase{D: run.OldLast, OK: run.OldLastOK}
		order := "ok"
		if len(run.Overlaps) > 0 {
			order = "OVERLAP"
		} else if !run.OldLastOK || run.Marks.Booted == 0 {
			order = "-"
		}
		result := "ok"
		switch {
		case run.Failure != "":
			result = "FAILED"
		case run.DoubleRun():
			result = "DOUBLE RUN"
		}
		row = append(row, old.String(), run.GuestGap().String(), fmt.Sprintf("%d/%d", run.Double, run.Samples), order, result)
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "FAULT\tRUNS\tMEDIAN %s\tMEDIAN %s\tMEDIAN GUEST GAP\tDOUBLE RUNS\tFAILED\n", strings.Join(phaseNames[:], "\tMEDIAN "), vmRunningName)
	for _, fault := range faultsOf(r.Runs) {
		var runs []FailoverRun
		for _, run := range r.Runs {
			if run.Fault == fault {
				runs = append(runs, run)
			}
		}
		row := []string{fault, fmt.Sprint(len(runs))}
		for i := range phaseCount {
			row = append(row, medianOf(runs, func(run FailoverRun) Phase { return run.Marks.Phases()[i] }))
		}
		row = append(row, medianOf(runs, func(run FailoverRun) Phase { return run.Marks.VMRunningPhase() }))
		row = append(row, medianOf(runs, FailoverRun.GuestGap))
		double, failed := 0, 0
		for _, run := range runs {
			if run.DoubleRun() {
				double++
			}
			if run.Failure != "" {
				failed++
			}
		}
		row = append(row, fmt.Sprintf("%d/%d", double, len(runs)), fmt.Sprintf("%d/%d", failed, len(runs)))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(w, "\nFencing profile %s: %s.\n", bench.OrDash(r.Profile), r.Timing)
	fmt.Fprintf(w, "\n%s\n\n", failoverAnchors)
	_, err := fmt.Fprintln(w, TargetVerdict(r))
	return err
}

// TargetVerdict says whether the runs met the profile's target.
func TargetVerdict(r FailoverReport) string {
	limit, ok := failoverTargets[r.Profile]
	if !ok {
		return fmt.Sprintf("Target: none set for profile %s (Fast: under 15 s plus guest boot; Critical: under 5 s plus boot, zero double runs).", bench.OrDash(r.Profile))
	}
	met, measured, double := 0, 0, 0
	var restarts []time.Duration
	for _, run := range r.Runs {
		if run.DoubleRun() {
			double++
		}
		if run.Failure != "" || run.Marks.Restarted == 0 {
			continue
		}
		measured++
		restarts = append(restarts, run.Marks.Restarted)
		if run.Marks.Restarted < limit {
			met++
		}
	}
	verdict := "MET"
	if met < len(r.Runs) || double > 0 {
		verdict = "MISSED"
	}
	med := "-"
	if s := bench.Summarize(restarts); s.N > 0 {
		med = fmt.Sprintf("%.1f s", s.Median.Seconds())
	}
	return fmt.Sprintf("Target (%s): the VM restarted elsewhere under %s plus guest boot (T0 → new launcher pod Running; median %s): %d of %d runs; double runs: %d of %d (zero allowed). %s.",
		r.Profile, limit, med, met, len(r.Runs), double, len(r.Runs), verdict)
}

// faultsOf lists the faults of runs in their first order.
func faultsOf(runs []FailoverRun) []string {
	var out []string
	for _, run := range runs {
		if !slices.Contains(out, run.Fault) {
			out = append(out, run.Fault)
		}
	}
	return out
}

// medianOf is the median of the phases f picks that were seen, or "-".
func medianOf(runs []FailoverRun, f func(FailoverRun) Phase) string {
	var ds []time.Duration
	for _, run := range runs {
		if p := f(run); p.OK {
			ds = append(ds, p.D)
		}
	}
	s := bench.Summarize(ds)
	if s.N == 0 {
		return "-"
	}
	return bench.Millis(s.Median)
}

// FalseFencingResult is what one profile went through under load without a fault.
type FalseFencingResult struct {
	Profile string
	Timing  deckhousev1.Timing
	// Observed is how long the cluster was watched under load (plus the tail after it).
	Observed time.Duration
	// Pauses is how often the control plane was frozen.
	Pauses int
	// Fenced counts Fenced events on Nodes; Removed the Node objects seen deleted or
	// recreated; Resets the watchdog resets in the watchdogs' logs; Unfed the Lease renewals
	// after which an agent did not feed its watchdog (too slow); StormPaused the storm
	// guard's FencingPaused events.
	Fenced, Removed, Resets, Unfed, StormPaused int
	// MaxLeaseAge is the oldest a node's Lease was seen (now − renewTime), on MaxLeaseNode.
	MaxLeaseAge  time.Duration
	MaxLeaseNode string
	// Failure says why the profile was not measured to the end ("" when it was).
	Failure string
}

// FalseFencingTable writes one row per profile and the verdict for the default profile.
func FalseFencingTable(w io.Writer, results []FalseFencingResult, defaultProfile string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROFILE\tWATCHDOG\tLEASE EVERY\tFENCE AFTER\tOBSERVED (s)\tCP PAUSES\tMAX LEASE AGE\tFENCED\tNODES REMOVED\tWATCHDOG RESETS\tUNFED RENEWALS\tSTORM GUARD\tRESULT")
	for _, r := range results {
		age := "-"
		if r.MaxLeaseAge > 0 {
			age = fmt.Sprintf("%s (%s)", bench.Millis(r.MaxLeaseAge), r.MaxLeaseNode)
		}
		result := "ok"
		switch {
		case r.Failure != "":
			result = "FAILED"
		case r.Fenced > 0 || r.Removed > 0:
			result = "FALSE FENCING"
		case r.Resets > 0:
			result = "WATCHDOG RESET"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\n", r.Profile, bench.Millis(r.Timing.Timeout), bench.Millis(r.Timing.LeaseInterval),
			bench.Millis(r.Timing.FenceAfter()), fmt.Sprintf("%.0f", r.Observed.Seconds()), r.Pauses, age, r.Fenced, r.Removed, r.Resets, r.Unfed, r.StormPaused, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range results {
		if r.Profile != defaultProfile {
			continue
		}
		verdict := "MET"
		if r.Failure != "" {
			verdict = "NOT MEASURED"
		} else if r.Fenced > 0 || r.Removed > 0 || r.Resets > 0 {
			verdict = "MISSED"
		}
		_, err := fmt.Fprintf(w, "\nTarget: no node fenced or reset with the default profile (%s, what ferry up uses): %d fenced, %d watchdog resets. %s.\n",
			defaultProfile, r.Fenced, r.Resets, verdict)
		return err
	}
	_, err := fmt.Fprintf(w, "\nTarget: no node fenced with the default profile (%s): not measured (not among the profiles run).\n", defaultProfile)
	return err
}
