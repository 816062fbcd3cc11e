package failover

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	"github.com/ferryvm/ferry/internal/bench/benchtest"
)

func millis(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestPhases(t *testing.T) {
	all := FailoverMarks{Detected: millis(1600), Fenced: millis(6800), PodCreated: millis(6900), Scheduled: millis(7000), Restarted: millis(7500),
		Booted: millis(15200), VMRunning: millis(14800)}
	for _, tc := range []struct {
		name  string
		marks FailoverMarks
		want  string // detection fencing-wait new-pod scheduled pod-running boot total | VM running
	}{
		{"all seen", all, "1600 5200 100 100 500 7700 15200 | 14800"},
		// A missed detection leaves it unknown; the fencing wait then runs from T0.
		{"no detection", FailoverMarks{Fenced: millis(6800), PodCreated: millis(6900), Scheduled: millis(7000), Restarted: millis(7500), Booted: millis(15200)},
			"- 6800 100 100 500 7700 15200 | -"},
		// A pod first seen already scheduled: scheduled unknown, pod running from the new pod.
		{"no scheduled", FailoverMarks{Detected: millis(1600), Fenced: millis(6800), PodCreated: millis(6900), Restarted: millis(7500), Booted: millis(15200), VMRunning: millis(16000)},
			"1600 5200 100 - 600 7700 15200 | 16000"},
		// A pod first seen Running in one poll: all three marks at once.
		{"one poll", FailoverMarks{Detected: millis(1600), Fenced: millis(6800), PodCreated: millis(7500), Scheduled: millis(7500), Restarted: millis(7500), Booted: millis(15200)},
			"1600 5200 700 0 0 7700 15200 | -"},
		{"not booted", FailoverMarks{Detected: millis(1600), Fenced: millis(6800), PodCreated: millis(6900), Scheduled: millis(7000), Restarted: millis(7500), VMRunning: millis(9000)},
			"1600 5200 100 100 500 - - | 9000"},
		{"nothing", FailoverMarks{}, "- - - - - - - | -"},
		// A new pod seen before the fencing shows as a negative phase, not hidden.
		{"out of order", FailoverMarks{Detected: millis(1000), Fenced: millis(5000), PodCreated: millis(4000), Scheduled: millis(4500), Restarted: millis(6000), Booted: millis(9000)},
			"1000 4000 -1000 500 1500 3000 9000 | -"},
	} {
		var got []string
		for _, p := range tc.marks.Phases() {
			got = append(got, p.String())
		}
		got = append(got, "|", tc.marks.VMRunningPhase().String())
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%s: phases %v, want %s", tc.name, got, tc.want)
		}
	}
}

func TestFailoverTable(t *testing.T) {
	r := FailoverReport{
		Profile: "Fast",
		Timing:  deckhousev1.TimingFor(5 * time.Second),
		Runs: []FailoverRun{
			{Fault: "poweroff", Run: 1, From: "node-1", To: "node-2", OldLast: millis(-300), OldLastOK: true, Samples: 200,
				Marks: FailoverMarks{Detected: millis(1600), Fenced: millis(6800), PodCreated: millis(6900), Scheduled: millis(7000), Restarted: millis(7500), Booted: millis(15200), VMRunning: millis(14800)}},
			{Fault: "poweroff", Run: 2, From: "node-2", To: "node-3", OldLast: millis(-100), OldLastOK: true, Samples: 210,
				Marks: FailoverMarks{Detected: millis(2000), Fenced: millis(7200), PodCreated: millis(7500), Scheduled: millis(7600), Restarted: millis(8100), Booted: millis(16000), VMRunning: millis(16400)}},
			{Fault: "freeze", Run: 1, From: "node-3", To: "node-1", OldLast: millis(5100), OldLastOK: true, Samples: 190, Double: 2,
				// The VM's phase Running never seen; the pod first seen already scheduled.
				Marks: FailoverMarks{Detected: millis(1500), Fenced: millis(6500), PodCreated: millis(6600), Restarted: millis(7000), Booted: millis(14000)}},
			{Fault: "disconnect", Run: 1, From: "node-1", Failure: "no heartbeat of a new instance within 5m0s", Samples: 3000},
		},
	}
	var buf bytes.Buffer
	if err := FailoverTable(&buf, r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Log("\n" + out)
	runs, medians, ok := strings.Cut(out, "\n\n")
	if !ok {
		t.Fatal("no blank line between the tables")
	}
	// The headers name each phase, then VM RUNNING, in their order (the cells split on
	// runs of at least two spaces, as the headers have spaces).
	for _, h := range []struct{ table, want string }{
		{runs, "FAULT|RUN|NODES|DETECTION|FENCING WAIT|NEW POD|SCHEDULED|POD RUNNING|BOOT|TOTAL|VM RUNNING|OLD LAST CNT|GUEST GAP|2×QEMU SAMPLES|CNT ORDER|RESULT"},
		{medians, "FAULT|RUNS|MEDIAN DETECTION|MEDIAN FENCING WAIT|MEDIAN NEW POD|MEDIAN SCHEDULED|MEDIAN POD RUNNING|MEDIAN BOOT|MEDIAN TOTAL|MEDIAN VM RUNNING|MEDIAN GUEST GAP|DOUBLE RUNS|FAILED"},
	} {
		header, _, _ := strings.Cut(strings.TrimLeft(h.table, "\n"), "\n")
		if got := strings.Join(regexp.MustCompile(` {2,}`).Split(strings.TrimSpace(header), -1), "|"); got != h.want {
			t.Errorf("header %q, want %q", got, h.want)
		}
	}
	for prefix, line := range map[string]string{
		"poweroff    1": "poweroff 1 node-1 → node-2 1600 5200 100 100 500 7700 15200 14800 -300 15500 0/200 ok ok",
		"freeze      1": "freeze 1 node-3 → node-1 1500 5000 100 - 400 7000 14000 - 5100 8900 2/190 ok DOUBLE RUN",
		"disconnect  1": "disconnect 1 node-1 → - - - - - - - - - - - 0/3000 - FAILED",
	} {
		if got := strings.Join(benchtest.Fields(t, runs, prefix), " "); got != line {
			t.Errorf("row %q = %q, want %q", prefix, got, line)
		}
	}
	// Medians of 2 runs: the mean of the middle two.
	for prefix, line := range map[string]string{
		"poweroff":   "poweroff 2 1800 5200 200 100 500 7800 15600 15600 15800 0/2 0/2",
		"freeze":     "freeze 1 1500 5000 100 - 400 7000 14000 - 8900 1/1 0/1",
		"disconnect": "disconnect 1 - - - - - - - - - 0/1 1/1",
	} {
		if got := strings.Join(benchtest.Fields(t, medians, prefix), " "); got != line {
			t.Errorf("median row %q = %q, want %q", prefix, got, line)
		}
	}
	for _, s := range []string{
		"Fencing profile Fast: watchdog 5s, lease renewed every 1s, fenced 7s after the last renewal.",
		"Proxmox VE HA", "vSphere HA", "KubeVirt without node remediation", "~9 min", "3.5–4 s",
		// 2 of 3 measured runs under 15 s; one double run; one failed: missed.
		"Target (Fast): the VM restarted elsewhere under 15s plus guest boot (T0 → new launcher pod Running; median 7.5 s): 3 of 4 runs; double runs: 1 of 4 (zero allowed). MISSED.",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

func TestNewLauncherPod(t *testing.T) {
	pod := func(name string, phase corev1.PodPhase, deleting bool) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{Phase: phase}}
		if deleting {
			p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		}
		return p
	}
	for _, tc := range []struct {
		name      string
		pods      []corev1.Pod
		following string
		want      string // "" for none
	}{
		{"only the old", []corev1.Pod{pod("old", corev1.PodRunning, false)}, "", ""},
		{"a new one", []corev1.Pod{pod("old", corev1.PodRunning, true), pod("new", corev1.PodPending, false)}, "", "new"},
		{"keeps following", []corev1.Pod{pod("a", corev1.PodPending, false), pod("b", corev1.PodPending, false)}, "b", "b"},
		{"followed one ended", []corev1.Pod{pod("a", corev1.PodFailed, false), pod("b", corev1.PodPending, false)}, "a", "b"},
		{"followed one terminating", []corev1.Pod{pod("a", corev1.PodRunning, true)}, "a", ""},
	} {
		got := ""
		if p := newLauncherPod(tc.pods, "old", tc.following); p != nil {
			got = p.Name
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRunSummary(t *testing.T) {
	run := FailoverRun{Fault: "poweroff", Run: 1, From: "node-1", To: "node-2", OldLast: millis(-300), OldLastOK: true, Samples: 200,
		Marks: FailoverMarks{Detected: millis(1600), Fenced: millis(6800), PodCreated: millis(6900), Scheduled: millis(7000), Restarted: millis(7500), Booted: millis(15200)}}
	want := "node-1 → node-2: detection 1.6s, fencing wait 5.2s, new pod 0.1s, scheduled 0.1s, pod running 0.5s, boot 7.7s, total 15.2s; VM Running at -; guest gap 15.5s; >1 QEMU in 0 of 200 samples"
	if got := runSummary(run); got != want {
		t.Errorf("runSummary:\n got %s\nwant %s", got, want)
	}
	run.Marks.VMRunning = millis(14800)
	if got := runSummary(run); !strings.Contains(got, "; VM Running at 14.8s;") {
		t.Errorf("runSummary with VMRunning: %s", got)
	}
}

func TestTargetVerdict(t *testing.T) {
	run := func(restarted time.Duration) FailoverRun {
		return FailoverRun{Fault: "poweroff", Marks: FailoverMarks{Detected: time.Second, Fenced: 2 * time.Second, Restarted: restarted, Booted: restarted + 5*time.Second}}
	}
	if got := TargetVerdict(FailoverReport{Profile: "Critical", Runs: []FailoverRun{run(4 * time.Second)}}); !strings.HasSuffix(got, "MET.") {
		t.Errorf("Critical at 4s: %s", got)
	}
	if got := TargetVerdict(FailoverReport{Profile: "Critical", Runs: []FailoverRun{run(4 * time.Second), run(5 * time.Second)}}); !strings.HasSuffix(got, "MISSED.") {
		t.Errorf("Critical at 5s: %s", got)
	}
	if got := TargetVerdict(FailoverReport{Profile: "Tolerant", Runs: []FailoverRun{run(30 * time.Second)}}); !strings.HasPrefix(got, "Target: none set for profile Tolerant") {
		t.Errorf("Tolerant: %s", got)
	}
}

func TestFalseFencingTable(t *testing.T) {
	results := []FalseFencingResult{
		{Profile: "Critical", Timing: deckhousev1.TimingFor(2 * time.Second), Observed: 95 * time.Second, Pauses: 9,
			Fenced: 2, Removed: 2, Resets: 3, Unfed: 12, StormPaused: 9, MaxLeaseAge: millis(2300), MaxLeaseNode: "node-2"},
		{Profile: "Fast", Timing: deckhousev1.TimingFor(5 * time.Second), Observed: 99 * time.Second, Pauses: 9,
			Unfed: 4, StormPaused: 9, MaxLeaseAge: millis(2100), MaxLeaseNode: "node-1"},
		{Profile: "Balanced", Timing: deckhousev1.TimingFor(10 * time.Second), Failure: "ferry up exited"},
	}
	var buf bytes.Buffer
	if err := FalseFencingTable(&buf, results, "Fast"); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Log("\n" + out)
	for prefix, line := range map[string]string{
		"Critical": "Critical 2000 500 3000 95 9 2300 (node-2) 2 2 3 12 9 FALSE FENCING",
		"Fast":     "Fast 5000 1000 7000 99 9 2100 (node-1) 0 0 0 4 9 ok",
		"Balanced": "Balanced 10000 2000 14000 0 0 - 0 0 0 0 0 FAILED",
	} {
		if got := strings.Join(benchtest.Fields(t, out, prefix), " "); got != line {
			t.Errorf("row %q = %q, want %q", prefix, got, line)
		}
	}
	if !strings.Contains(out, "(Fast, what ferry up uses): 0 fenced, 0 watchdog resets. MET.") {
		t.Errorf("verdict missing:\n%s", out)
	}
	buf.Reset()
	if err := FalseFencingTable(&buf, results[:1], "Fast"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "not measured") {
		t.Errorf("verdict without Fast:\n%s", buf.String())
	}
}

func TestCountAfter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.log")
	before := "Watchdog of node node-1 expired (x): reset the node\n"
	os.WriteFile(path, []byte(before), 0o644)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	f.WriteString("armed\nWatchdog expired\nWatchdog of node node-1 expired (y): reset the node\nWatchdog of node node-1 expired (z): reset the node\n")
	f.Close()
	if got := countAfter(path, int64(len(before)), "reset the node"); got != 2 {
		t.Errorf("countAfter = %d, want 2", got)
	}
	if got := countAfter(filepath.Join(t.TempDir(), "missing"), 0, "reset the node"); got != 0 {
		t.Errorf("countAfter of a missing file = %d", got)
	}
}
