package migration

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
)

// table writes the results: one row per scenario and system with medians and maxima in
// milliseconds, then Ferry's end-to-end median against the raw transfer median, then the
// failure totals.
func table(w io.Writer, results []bench.ScenarioResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tSYSTEM\tN\tE2E MED\tE2E MAX\tTRANSFER MED\tTRANSFER MAX\tDOWNTIME MED\tDOWNTIME MAX\tMIGRATION FAILED\tPOST-MIGRATION FAILURES")
	for _, r := range results {
		for _, sys := range []struct {
			name string
			s    bench.Series
		}{{"ferry", r.Ferry}, {"raw", r.Raw}} {
			if sys.s.Skipped {
				fmt.Fprintf(tw, "%s\t%s\t-\t(skipped)\t\t\t\t\t\t\t\n", r.Name, sys.name)
				continue
			}
			row := []string{r.Name, sys.name, fmt.Sprint(len(sys.s.Completed()))}
			for _, f := range []func(bench.Sample) time.Duration{bench.E2EOf, bench.TransferOf, bench.DowntimeOf} {
				m, x := bench.MedMax(sys.s.Stat(f))
				row = append(row, m, x)
			}
			total := len(sys.s.Samples)
			row = append(row,
				fmt.Sprintf("%d/%d", sys.s.Count(bench.MigrationFailed), total),
				fmt.Sprintf("%d/%d", sys.s.Count(bench.PostFailure), len(sys.s.Completed())))
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "SCENARIO\tFERRY E2E / RAW TRANSFER (MEDIANS)\tFERRY E2E - RAW TRANSFER (MEDIANS, ms)\tFERRY E2E - RAW E2E (MEDIANS, ms)")
	for _, r := range results {
		fe, rt, re := r.Ferry.Stat(bench.E2EOf), r.Raw.Stat(bench.TransferOf), r.Raw.Stat(bench.E2EOf)
		ratio, diff, diffE2E := "-", "-", "-"
		if fe.N > 0 && rt.N > 0 {
			if rt.Median > 0 {
				ratio = fmt.Sprintf("%.1fx", float64(fe.Median)/float64(rt.Median))
			}
			diff = bench.Millis(fe.Median - rt.Median)
		}
		if fe.N > 0 && re.N > 0 {
			diffE2E = bench.Millis(fe.Median - re.Median)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, ratio, diff, diffE2E)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var ferryPost, ferryDone, ferryFailed, ferryTotal, rawPost, rawDone int
	for _, r := range results {
		ferryPost += r.Ferry.Count(bench.PostFailure)
		ferryDone += len(r.Ferry.Completed())
		ferryFailed += r.Ferry.Count(bench.MigrationFailed)
		ferryTotal += len(r.Ferry.Samples)
		rawPost += r.Raw.Count(bench.PostFailure)
		rawDone += len(r.Raw.Completed())
	}
	if _, err := fmt.Fprintf(w, "\nPost-migration failures: Ferry %d/%d completed migrations, raw %d/%d. Failed Ferry migrations: %d/%d.\n",
		ferryPost, ferryDone, rawPost, rawDone, ferryFailed, ferryTotal); err != nil {
		return err
	}
	return netTable(w, results)
}

// netTable writes the network side of Ferry's migrations: probes lost, network downtime
// (longest silence) against QEMU's downtime, and how many stayed within QEMU's downtime
// plus NetTarget.
func netTable(w io.Writer, results []bench.ScenarioResult) error {
	measured := false
	for _, r := range results {
		for _, x := range r.Ferry.Completed() {
			measured = measured || x.Net != nil
		}
	}
	if !measured {
		_, err := fmt.Fprintln(w, "\nNetwork: not measured (needs root and a VM with a NIC: ferry up with node namespaces).")
		return err
	}
	fmt.Fprintf(w, "\nNetwork during Ferry's migrations (ICMP echo every 10 ms from the host to the VM's address, from the operation's creation until it answered on the target; ms):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tN\tLOST MED\tLOST MAX\tNET DOWNTIME MED\tNET DOWNTIME MAX\tSILENCE MED\tSILENCE MAX\tQEMU DOWNTIME MED\tNET - QEMU MED\tNET - QEMU MAX\tNET <= QEMU + "+bench.Millis(bench.NetTarget))
	for _, r := range results {
		var lost, outage, silence, over, qemu []time.Duration
		within, n := 0, 0
		for _, x := range r.Ferry.Completed() {
			if x.Net == nil {
				continue
			}
			n++
			lost = append(lost, time.Duration(x.Net.Lost))
			outage = append(outage, x.Net.Outage)
			silence = append(silence, x.Net.Silence)
			qemu = append(qemu, x.Downtime)
			over = append(over, x.Net.Outage-x.Downtime)
			if x.Net.Outage <= x.Downtime+bench.NetTarget {
				within++
			}
		}
		if n == 0 {
			fmt.Fprintf(tw, "%s\t0\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n", r.Name)
			continue
		}
		l, ou, sl, q, o := bench.Summarize(lost), bench.Summarize(outage), bench.Summarize(silence), bench.Summarize(qemu), bench.Summarize(over)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\n", r.Name, n, int64(l.Median), int64(l.Max),
			bench.Millis(ou.Median), bench.Millis(ou.Max), bench.Millis(sl.Median), bench.Millis(sl.Max), bench.Millis(q.Median), bench.Millis(o.Median), bench.Millis(o.Max), within, n)
	}
	return tw.Flush()
}
