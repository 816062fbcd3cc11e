package drain

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
)

// DrainVM is what the drain did to one VM.
type DrainVM struct {
	Name string
	// From and To are the nodes before and after; IPBefore and IPAfter its addresses.
	From, To          string
	IPBefore, IPAfter string
	// Moved is from the start of the drain until the VM was seen Running off the drained
	// node (polled every 250 ms); 0 when it was not seen.
	Moved time.Duration
	// Failure says why the VM did not keep running and counting; "" when it did.
	Failure string
}

// DrainResult is what RunDrain measured.
type DrainResult struct {
	// Node is the drained node; ClusterNodes how many nodes the cluster had.
	Node         string
	ClusterNodes int
	// Webhook is Ferry's eviction webhook (a ValidatingWebhookConfiguration named
	// *ferry*); "" when there was none and kubectl drain deleted the launcher pods.
	Webhook string
	// Drain is how long `kubectl drain` ran until it exited 0.
	Drain time.Duration
	// DrainFailed says why the drain did not exit 0 in time; "" when it did.
	DrainFailed string
	// Single is the baseline: one Migrate operation at a time.
	Single bench.Series
	// VMs are the drained VMs, checked after the drain.
	VMs []DrainVM
	// Problems are post-drain findings that concern no single VM (the node not cordoned).
	Problems []string
}

// PostDrainFailures counts the VMs that did not keep running and counting.
func (r DrainResult) PostDrainFailures() int {
	n := 0
	for _, v := range r.VMs {
		if v.Failure != "" {
			n++
		}
	}
	return n
}

// DrainTable writes the drain result: the drain time against N single migrations, then one
// row per VM.
func DrainTable(w io.Writer, r DrainResult) error {
	n := len(r.VMs)
	single := r.Single.Stat(bench.E2EOf)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VMS\tDRAIN\tSINGLE MED\tSINGLE MAX\tN × SINGLE MED\tDRAIN / (N × SINGLE MED)\tPOST-DRAIN FAILURES")
	drain, ratio, post := "-", "-", "-"
	if r.DrainFailed != "" {
		drain = "FAILED"
	} else if r.Drain > 0 {
		drain = bench.Millis(r.Drain)
		post = fmt.Sprintf("%d/%d", r.PostDrainFailures(), n)
	}
	med, mx := bench.MedMax(single)
	nSingle := "-"
	if single.N > 0 {
		total := time.Duration(n) * single.Median
		nSingle = bench.Millis(total)
		if r.DrainFailed == "" && r.Drain > 0 && total > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(r.Drain)/float64(total))
		}
	}
	fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", n, drain, med, mx, nSingle, ratio, post)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nSingle migrations: %d completed of %d, %d failed, %d post-migration failures.\n",
		len(r.Single.Completed()), len(r.Single.Samples), r.Single.Count(bench.MigrationFailed), r.Single.Count(bench.PostFailure))
	if n == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "VM\tFROM\tTO\tIP BEFORE\tIP AFTER\tOFF %s AFTER\tRESULT\n", strings.ToUpper(bench.OrDash(r.Node)))
	for _, v := range r.VMs {
		moved, result := "-", "ok"
		if v.Moved > 0 {
			moved = bench.Millis(v.Moved)
		}
		if v.Failure != "" {
			result = "POST-DRAIN FAILURE"
		}
		if r.DrainFailed != "" || r.Drain == 0 {
			result = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, bench.OrDash(v.From), bench.OrDash(v.To), bench.OrDash(v.IPBefore), bench.OrDash(v.IPAfter), moved, result)
	}
	return tw.Flush()
}
