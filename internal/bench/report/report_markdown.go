package report

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/bench/drain"
	"github.com/ferryvm/ferry/internal/bench/failover"
	"github.com/ferryvm/ferry/internal/bench/scale"
)

// RenderMarkdown writes a report as markdown. It reads nothing but r: every figure in it
// comes from r's results, and a part without results shows why (skipped, failed).
func RenderMarkdown(r Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Ferry benchmarks\n\n")
	fmt.Fprintf(&b, "Measured by `ferry-bench report` on %s; the whole run took %s.\n\n", r.Date.Format("2006-01-02 15:04 MST"), r.Elapsed.Round(time.Second))
	if r.Command != "" {
		fmt.Fprintf(&b, "```\n%s\n```\n\n", r.Command)
	}
	b.WriteString("Every figure below was measured by that run on the machine described here. Each section gives the " +
		"command that measures its figures on its own; a benchmark that failed or was skipped says so, with its error, " +
		"and shows only what it measured before. Times are in milliseconds unless a column says otherwise; " +
		"`-` is a figure that was not measured.\n\n")
	machineSection(&b, r.Machine)
	migrationSection(&b, r)
	drainSection(&b, r.Drain)
	failoverSection(&b, r)
	falseFencingSection(&b, r.FalseFencing)
	scaleSection(&b, r)
	return b.String()
}

func machineSection(b *strings.Builder, m Machine) {
	b.WriteString("## Machine\n\n")
	cpu := m.CPU
	if m.CPUs > 0 {
		cpu = fmt.Sprintf("%s, %d CPUs", m.CPU, m.CPUs)
	}
	mdTable(b, []string{"", ""}, [][]string{
		{"CPU", cpu}, {"Memory", m.Memory}, {"Kernel", m.Kernel}, {"QEMU", m.QEMU},
		{"KVM", m.KVM}, {"Go", m.Go}, {"Commit", m.Commit},
	})
}

func migrationSection(b *strings.Builder, r Report) {
	b.WriteString("## Live migration: Ferry against bare QEMU\n\n")
	b.WriteString("`ferry-bench migration` evicts one VM (1 core) back and forth between the nodes of `ferry up --nodes 2`, " +
		"its guest idle and then rewriting some MiB of its memory in a loop, and migrates the same guest between two " +
		"bare QEMU processes on loopback, with the parameters Ferry's controller used. The runs interleave (Ferry, raw, " +
		"Ferry, raw …) and both guests live through a scenario (both idle, or both dirtying), so that load falls on both alike. E2E: Ferry from creating the " +
		"VirtualMachineOperation to seeing it Completed, raw from the migrate command until the destination runs. " +
		"Transfer and downtime are QEMU's own: total migration time and switchover pause. N counts completed migrations; " +
		"a post-migration failure is a completed migration after which the guest did not count on.\n\n")
	var rows, overhead [][]string
	var failures []string
	net := false
	for _, p := range r.Migration {
		if p.Result == nil {
			rows = append(rows, padRow([]string{p.Memory, "no figures: " + partState(p.Part)}, 12))
			continue
		}
		for _, sc := range p.Result.Scenarios {
			for _, sys := range []struct {
				name string
				s    bench.Series
			}{{"Ferry", sc.Ferry}, {"raw", sc.Raw}} {
				if sys.s.Skipped {
					rows = append(rows, padRow([]string{p.Memory, sc.Name, sys.name, "skipped"}, 12))
					continue
				}
				row := []string{p.Memory, sc.Name, sys.name, fmt.Sprint(len(sys.s.Completed()))}
				for _, f := range []func(bench.Sample) time.Duration{bench.E2EOf, bench.TransferOf, bench.DowntimeOf} {
					m, x := bench.MedMax(sys.s.Stat(f))
					row = append(row, m, x)
				}
				row = append(row, fmt.Sprintf("%d/%d", sys.s.Count(bench.MigrationFailed), len(sys.s.Samples)),
					fmt.Sprintf("%d/%d", sys.s.Count(bench.PostFailure), len(sys.s.Completed())))
				rows = append(rows, row)
				for i, s := range sys.s.Samples {
					if s.Outcome != bench.OK {
						f := fmt.Sprintf("%s %s %s #%d: %s", p.Memory, sys.name, sc.Name, i+1, s.Outcome)
						if s.Detail != "" {
							f += ": " + bench.FirstLine(s.Detail)
						}
						failures = append(failures, f)
					}
					net = net || s.Net != nil
				}
			}
			fe, rt, re := sc.Ferry.Stat(bench.E2EOf), sc.Raw.Stat(bench.TransferOf), sc.Raw.Stat(bench.E2EOf)
			ratio, diff := "-", "-"
			if fe.N > 0 && rt.N > 0 && rt.Median > 0 {
				ratio = fmt.Sprintf("%.1fx", float64(fe.Median)/float64(rt.Median))
			}
			if fe.N > 0 && re.N > 0 {
				diff = bench.Millis(fe.Median - re.Median)
			}
			overhead = append(overhead, []string{p.Memory, sc.Name, ratio, diff})
		}
	}
	mdTable(b, []string{"Memory", "Scenario", "System", "N", "E2E med", "E2E max", "Transfer med", "Transfer max",
		"Downtime med", "Downtime max", "Migrations failed", "Post-migration failures"}, rows)
	if len(overhead) > 0 {
		b.WriteString("Ferry's orchestration on top of QEMU (medians):\n\n")
		mdTable(b, []string{"Memory", "Scenario", "Ferry E2E / raw transfer", "Ferry E2E − raw E2E"}, overhead)
	}
	if net {
		migrationNetTable(b, r.Migration)
	}
	for _, p := range r.Migration {
		if p.Result != nil {
			bench.TimelineTable(b, p.Result.Scenarios)
		}
	}
	b.WriteString("\n")
	for _, p := range r.Migration {
		if res := p.Result; res != nil {
			src := "the options' (no Ferry migration showed the controller's)"
			if res.ParamsFromController {
				src = "those Ferry's controller sent"
			}
			fmt.Fprintf(b, "- %s: %d run(s) per scenario and system; dirtying %s; raw baseline with %s: %d MiB/s, downtime limit %s, auto-converge %v.\n",
				p.Memory, res.Runs, dirtyText(res.DirtyMiB), src, res.Params.MaxBandwidth>>20, res.Params.DowntimeLimit, res.Params.AutoConverge)
		}
	}
	b.WriteString("\n")
	listFailures(b, "Failed migrations", failures)
	embedPlots(b, r, partMigration)
	b.WriteString("Commands:\n\n")
	for _, p := range r.Migration {
		commandItem(b, p.Memory, p.Part)
	}
	b.WriteString("\n")
}

func dirtyText(mib int) string {
	if mib == 0 {
		return "not run"
	}
	return fmt.Sprintf("%d MiB", mib)
}

// migrationNetTable shows what pings every 10 ms saw of Ferry's migrations.
func migrationNetTable(b *strings.Builder, parts []MigrationPart) {
	var rows [][]string
	for _, p := range parts {
		if p.Result == nil {
			continue
		}
		for _, sc := range p.Result.Scenarios {
			var lost, outage, qemu []time.Duration
			for _, x := range sc.Ferry.Completed() {
				if x.Net != nil {
					lost = append(lost, time.Duration(x.Net.Lost))
					outage = append(outage, x.Net.Outage)
					qemu = append(qemu, x.Downtime)
				}
			}
			if len(lost) == 0 {
				continue
			}
			om, ox := bench.MedMax(bench.Summarize(outage))
			qm, _ := bench.MedMax(bench.Summarize(qemu))
			rows = append(rows, []string{p.Memory, sc.Name, fmt.Sprint(len(lost)), fmt.Sprint(int64(bench.Summarize(lost).Median)), om, ox, qm})
		}
	}
	b.WriteString("Network during Ferry's migrations (ICMP echo every 10 ms from the host to the VM's address; network downtime is the longest run of unanswered probes):\n\n")
	mdTable(b, []string{"Memory", "Scenario", "N", "Pings lost med", "Net downtime med", "Net downtime max", "QEMU downtime med"}, rows)
}

func drainSection(b *strings.Builder, p DrainPart) {
	b.WriteString("## Drain\n\n")
	fmt.Fprintf(b, "`ferry-bench drain` runs `kubectl drain` on a node of `ferry up --nodes 3` that runs %d VM(s) of %s, which Ferry "+
		"live-migrates, against the same number of single migrations one after another (single: one Migrate operation from "+
		"creation to Completed). A post-drain failure is a VM that did not run on another node with the same address and a "+
		"guest that counted on.\n\n", p.VMs, p.Memory)
	if res := p.Result; res != nil {
		n := len(res.VMs)
		single := res.Single.Stat(bench.E2EOf)
		took, ratio, post, nSingle := "-", "-", "-", "-"
		if res.DrainFailed != "" {
			took = "FAILED"
		} else if res.Drain > 0 {
			took, post = bench.Millis(res.Drain), fmt.Sprintf("%d/%d", res.PostDrainFailures(), n)
		}
		if single.N > 0 {
			total := time.Duration(n) * single.Median
			nSingle = bench.Millis(total)
			if took != "-" && took != "FAILED" && total > 0 {
				ratio = fmt.Sprintf("%.2fx", float64(res.Drain)/float64(total))
			}
		}
		med, mx := bench.MedMax(single)
		mdTable(b, []string{"VMs", "Cluster nodes", "Eviction webhook", "Drain", "Single med", "Single max", "N × single med",
			"Drain / (N × single med)", "Single migrations failed", "Single post-migration failures", "Post-drain failures"},
			[][]string{{fmt.Sprint(n), fmt.Sprint(res.ClusterNodes), drain.WebhookName(res.Webhook), took, med, mx, nSingle, ratio,
				fmt.Sprintf("%d/%d", res.Single.Count(bench.MigrationFailed), len(res.Single.Samples)),
				fmt.Sprintf("%d/%d", res.Single.Count(bench.PostFailure), len(res.Single.Completed())), post}})
		if n > 0 {
			var rows [][]string
			for _, v := range res.VMs {
				moved, result := "-", "ok"
				if v.Moved > 0 {
					moved = bench.Millis(v.Moved)
				}
				if v.Failure != "" {
					result = "POST-DRAIN FAILURE: " + bench.FirstLine(v.Failure)
				}
				if res.DrainFailed != "" || res.Drain == 0 {
					result = "-"
				}
				rows = append(rows, []string{v.Name, bench.OrDash(v.From), bench.OrDash(v.To), bench.OrDash(v.IPBefore), bench.OrDash(v.IPAfter), moved, result})
			}
			mdTable(b, []string{"VM", "From", "To", "IP before", "IP after", "Running off " + bench.OrDash(res.Node) + " after", "Result"}, rows)
		}
		if res.DrainFailed != "" {
			fmt.Fprintf(b, "The drain failed: %s\n\n", mdInline(bench.FirstLine(res.DrainFailed)))
		}
		listFailures(b, "Other findings", res.Problems)
	}
	b.WriteString("Command:\n\n")
	commandItem(b, "", p.Part)
	b.WriteString("\n")
}

func failoverSection(b *strings.Builder, r Report) {
	p := r.Failover
	b.WriteString("## Failover\n\n")
	fmt.Fprintf(b, "`ferry-bench failover` fails the node of a VM (%s, 1 core, runPolicy AlwaysOn) on `ferry up --nodes 3` "+
		"and times, from the fault (T0): detection (the VM's NodeReachable=False, FencingPending), fencing wait (the Node "+
		"deleted), new pod (a new launcher pod seen), scheduled (that pod given a node), pod running (that pod Running), "+
		"boot (the new guest's first heartbeat); each from the step before, as polled every 100 ms; total is T0 to that "+
		"heartbeat. VM Running is T0 to the VM's phase Running on the new node, which may come before or after the "+
		"heartbeat. Guest gap: the old guest's last heartbeat to the new one's first. A double run is two instances of "+
		"the VM seen at once.\n\n", p.Memory)
	if res := p.Result; res != nil {
		fmt.Fprintf(b, "Fencing profile %s: %s.\n\n", bench.OrDash(res.Profile), res.Timing)
		var rows [][]string
		for _, run := range res.Runs {
			row := []string{run.Fault, fmt.Sprint(run.Run), run.From + " → " + bench.OrDash(run.To)}
			for _, ph := range run.Marks.Phases() {
				row = append(row, ph.String())
			}
			row = append(row, run.Marks.VMRunningPhase().String())
			result := "ok"
			switch {
			case run.Failure != "":
				result = "FAILED: " + bench.FirstLine(run.Failure)
			case run.DoubleRun():
				result = "DOUBLE RUN"
			}
			rows = append(rows, append(row, run.GuestGap().String(), fmt.Sprintf("%d/%d", run.Double, run.Samples), result))
		}
		mdTable(b, []string{"Fault", "Run", "Nodes", "Detection", "Fencing wait", "New pod", "Scheduled", "Pod running", "Boot", "Total",
			"VM Running", "Guest gap", "Samples with 2 QEMUs", "Result"}, rows)
		if len(res.Runs) > 0 {
			fmt.Fprintf(b, "%s\n\n", failover.TargetVerdict(*res))
		}
	}
	embedPlots(b, r, partFailover)
	b.WriteString("Command:\n\n")
	commandItem(b, "", p.Part)
	b.WriteString("\n")
}

func falseFencingSection(b *strings.Builder, p FalseFencingPart) {
	b.WriteString("## False fencing\n\n")
	b.WriteString("`ferry-bench false-fencing` runs a healthy `ferry up --nodes 3` per fencing profile under load (busy CPUs, " +
		"netem latency on the nodes' links, the control plane frozen now and then) and counts the nodes fenced or reset " +
		"by their watchdog although nothing failed. The target: none with the default profile (Fast).\n\n")
	if res := p.Result; res != nil {
		fmt.Fprintf(b, "Load for %s per profile: %d busy loops on %d CPUs, netem %s, control plane frozen %s every %s.\n\n",
			res.Duration, res.Busy, res.CPUs, res.Netem, res.Pause, res.PauseEvery)
		var rows [][]string
		for _, x := range res.Results {
			age := "-"
			if x.MaxLeaseAge > 0 {
				age = fmt.Sprintf("%s (%s)", bench.Millis(x.MaxLeaseAge), x.MaxLeaseNode)
			}
			result := "ok"
			switch {
			case x.Failure != "":
				result = "FAILED: " + bench.FirstLine(x.Failure)
			case x.Fenced > 0 || x.Removed > 0:
				result = "FALSE FENCING"
			case x.Resets > 0:
				result = "WATCHDOG RESET"
			}
			rows = append(rows, []string{x.Profile, bench.Millis(x.Timing.Timeout), bench.Millis(x.Timing.LeaseInterval), bench.Millis(x.Timing.FenceAfter()),
				fmt.Sprintf("%.0f", x.Observed.Seconds()), fmt.Sprint(x.Pauses), age, fmt.Sprint(x.Fenced), fmt.Sprint(x.Removed),
				fmt.Sprint(x.Resets), fmt.Sprint(x.Unfed), fmt.Sprint(x.StormPaused), result})
		}
		mdTable(b, []string{"Profile", "Watchdog", "Lease every", "Fence after", "Observed (s)", "Control-plane pauses",
			"Max lease age", "Fenced", "Nodes removed", "Watchdog resets", "Unfed renewals", "Storm guard pauses", "Result"}, rows)
	}
	b.WriteString("Command:\n\n")
	commandItem(b, "", p.Part)
	b.WriteString("\n")
}

func scaleSection(b *strings.Builder, r Report) {
	b.WriteString("## Scale (simulated nodes)\n\n")
	b.WriteString("`ferry-bench scale` runs `ferry up --nodes 0` with `ferry sim-nodes`: real node agents whose VMs run in memory " +
		"(no QEMU; a migration takes 200 ms; their watchdogs are armed and fed but never reset a node, since a hundred simulated nodes share two cores), against the real control plane and controllers. Phases: start (all VMs " +
		"created until Running), drain of one node, evacuation of a share of the nodes at once, failure of nodes at once. " +
		"Per VM: each evacuation from its creation to Completed (to the second), or each failed node's VM from the fault " +
		"to Running elsewhere. Controller CPU is in % of one core; reconcile times are the VM controller's, as upper " +
		"bounds of histogram buckets.\n\n")
	var rows [][]string
	for _, p := range r.Scale {
		cluster := fmt.Sprintf("%d × %d", p.Nodes, p.VMsPerNode)
		res := p.Result
		if res == nil {
			rows = append(rows, padRow([]string{cluster, "no figures: " + partState(p.Part)}, 14))
			continue
		}
		for _, ph := range []struct {
			name string
			p    *scale.ScalePhase
		}{{"start", res.Start}, {"drain 1 node", res.Drain}, {"evacuate", res.Evacuate}, {"fail", res.Failure}} {
			if ph.p == nil {
				rows = append(rows, padRow([]string{cluster, ph.name, "not reached"}, 14))
				continue
			}
			l := ph.p.Load
			p50, p99, mx := "-", "-", "-"
			if len(ph.p.PerVM) > 0 {
				p50, p99 = fmtSeconds(nearestRank(ph.p.PerVM, 0.5)), fmtSeconds(nearestRank(ph.p.PerVM, 0.99))
				mx = fmtSeconds(slices.Max(ph.p.PerVM))
			}
			rows = append(rows, []string{cluster, ph.name, fmt.Sprint(ph.p.Nodes), fmt.Sprint(ph.p.VMs), fmtSeconds(ph.p.Took),
				p50, p99, mx, fmt.Sprintf("%.0f", l.CPUPercent), fmt.Sprint(l.RSS >> 20), fmt.Sprintf("%.0f", l.RequestsPerSec),
				l.Reconcile.P50.String(), l.Reconcile.P99.String(), fmt.Sprint(l.Reconcile.N)})
		}
	}
	mdTable(b, []string{"Nodes × VMs", "Phase", "Nodes", "VMs", "Time (s)", "Per VM p50 (s)", "Per VM p99 (s)", "Per VM max (s)",
		"Controller CPU %", "Controller RSS (MiB)", "API requests/s", "Reconcile p50", "Reconcile p99", "Reconciles"}, rows)
	var stages []string
	for _, p := range r.Scale {
		if p.Result != nil && p.Result.Failure != nil && p.Result.Failure.Stages != "" {
			stages = append(stages, fmt.Sprintf("- %d × %d: %s\n", p.Nodes, p.VMsPerNode, p.Result.Failure.Stages))
		}
	}
	if len(stages) > 0 {
		b.WriteString("Where a failover's time goes (per VM of the failed nodes, p50/p99/max of each stage):\n\n" + strings.Join(stages, "") + "\n")
	}
	embedPlots(b, r, partScale)
	b.WriteString("Commands:\n\n")
	for _, p := range r.Scale {
		commandItem(b, fmt.Sprintf("%d × %d", p.Nodes, p.VMsPerNode), p.Part)
	}
	b.WriteString("\n")
}

// nearestRank is the f-quantile of ds as bench.Pct computes it (nearest rank).
func nearestRank(ds []time.Duration, f float64) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[max(0, min(len(s)-1, int(math.Ceil(f*float64(len(s))))-1))]
}

func fmtSeconds(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) }

// partState says why a part has no figures, or how it ran.
func partState(p Part) string {
	switch {
	case p.Skipped != "":
		return "skipped (" + p.Skipped + ")"
	case p.Err != "":
		return fmt.Sprintf("FAILED after %s: %s", p.Elapsed.Round(time.Second), bench.FirstLine(p.Err))
	}
	return fmt.Sprintf("ran %s", p.Elapsed.Round(time.Second))
}

// commandItem lists a part's command with how it went; a failure's whole error follows.
func commandItem(b *strings.Builder, label string, p Part) {
	if label != "" {
		label += ": "
	}
	fmt.Fprintf(b, "- %s`%s` — %s\n", label, p.Command, mdInline(partState(p)))
	if p.Err != "" && strings.Contains(p.Err, "\n") {
		fmt.Fprintf(b, "\n  ```\n  %s\n  ```\n", strings.ReplaceAll(strings.TrimSpace(p.Err), "\n", "\n  "))
	}
}

func listFailures(b *strings.Builder, title string, items []string) {
	if len(items) == 0 {
		return
	}
	fmt.Fprintf(b, "%s:\n\n", title)
	for _, s := range items {
		fmt.Fprintf(b, "- %s\n", mdInline(s))
	}
	b.WriteString("\n")
}

// embedPlots links the section's plots, or says why one is missing.
func embedPlots(b *strings.Builder, r Report, section string) {
	for _, p := range r.Plots {
		if p.Section != section {
			continue
		}
		if p.Err != "" {
			fmt.Fprintf(b, "*Plot \"%s\" could not be drawn: %s*\n\n", p.Title, mdInline(p.Err))
			continue
		}
		fmt.Fprintf(b, "![%s](%s)\n\n", p.Title, path.Join(r.PlotsDir, p.File))
	}
}

// mdTable writes a markdown table.
func mdTable(b *strings.Builder, header []string, rows [][]string) {
	if len(rows) == 0 {
		b.WriteString("No figures.\n\n")
		return
	}
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + mdCell(c) + " |")
		}
		b.WriteString("\n")
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = "---"
	}
	b.WriteString("|" + strings.Join(sep, "|") + "|\n")
	for _, r := range rows {
		line(r)
	}
	b.WriteString("\n")
}

func padRow(cells []string, n int) []string {
	for len(cells) < n {
		cells = append(cells, "")
	}
	return cells
}

func mdCell(s string) string { return strings.ReplaceAll(mdInline(s), "|", `\|`) }

// mdInline keeps s on one line.
func mdInline(s string) string { return strings.Join(strings.Fields(s), " ") }
