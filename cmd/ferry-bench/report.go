package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/internal/bench/report"
)

func reportCommand() *cobra.Command {
	o := report.DefaultReportOptions()
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Run every benchmark, one after another, and write docs/benchmarks.md with PNG plots",
		Long: `Runs every benchmark of ferry-bench, one after another (each starts and stops its own
` + "`ferry up`" + `; only one can run on a machine, and they would skew each other's figures), and
writes what they measured to --out (docs/benchmarks.md) with PNG plots in the directory of
the same name without .md (docs/benchmarks/):
  migration      ` + "`ferry-bench migration`" + ` once per --memory-sizes, idle and dirtying
                 --dirty-mib MiB, --runs migrations each for Ferry and bare QEMU; plots of
                 the end-to-end time, QEMU's transfer time and the downtime against memory
  drain          ` + "`ferry-bench drain`" + ` with --drain-vms VMs of --drain-memory
  failover       ` + "`ferry-bench failover`" + ` with --failover-profile, --failover-faults and
                 --failover-runs; a plot of each run's phases
  false-fencing  ` + "`ferry-bench false-fencing`" + ` with --false-fencing-profiles for
                 --false-fencing-duration each
  scale          ` + "`ferry-bench scale`" + ` once per --scale-sizes (NODESxVMS_PER_NODE, simulated
                 nodes); plots of the VM controller's reconcile p50/p99 and of the
                 per-migration and per-restart times against the number of VMs
The report also describes the machine (CPU, memory, kernel, QEMU, KVM, Go, git commit) and
gives, for each benchmark, the command that measures its figures on its own. A benchmark
that fails or is skipped (--skip) is shown so, with its error, and the report goes on with
the next; it holds no figure that was not measured in this run. The command exits non-zero
when a benchmark failed (the report is written all the same). Ctrl-C stops the running
benchmark, which cleans up, and writes the report of what was measured.

The defaults take about half an hour on 2 cores without KVM (the three scale runs about
half of it); the report gives each benchmark's time. The benchmarks' own output goes to
standard output as they run.`,
		Example: `  ferry-bench report
  ferry-bench report --skip migration,drain,failover,false-fencing --scale-sizes 3x2 --out /tmp/rep/benchmarks.md
  ferry-bench report --runs 1 --memory-sizes 128Mi --skip scale,false-fencing --failover-faults poweroff`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Log = cmd.OutOrStdout()
			o.Self = selfPath()
			o.Args = append([]string{o.Self}, os.Args[1:]...)
			_, err := report.RunReport(cmd.Context(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Out, "out", o.Out, "markdown file of the report; the plots go to the directory of the same name without .md")
	f.StringSliceVar(&o.Skip, "skip", nil, "benchmarks not to run: migration, drain, failover, false-fencing, scale")
	f.StringVar(&o.FerryBin, "ferry", "", "ferry binary that runs the clusters (default: ferry next to ferry-bench, else bin/ferry)")
	f.IntVar(&o.Port, "port", o.Port, "apiserver port of the clusters")
	f.DurationVar(&o.WaitOther, "wait-other", 0, "wait this long for another ferry up on this machine to end before the first benchmark")
	f.StringSliceVar(&o.MemorySizes, "memory-sizes", o.MemorySizes, "guest memory sizes of the migration benchmark, one run each")
	f.IntVar(&o.Runs, "runs", o.Runs, "migrations per memory size, scenario and system (Ferry, raw QEMU)")
	f.IntVar(&o.DirtyMiB, "dirty-mib", o.DirtyMiB, "MiB the busy guest rewrites in a loop (fitted to each guest: at most half its memory and 96 MiB less than it)")
	f.IntVar(&o.DrainVMs, "drain-vms", o.DrainVMs, "VMs on the drained node")
	f.StringVar(&o.DrainMemory, "drain-memory", o.DrainMemory, "memory of each drained VM")
	f.StringVar(&o.FailoverProfile, "failover-profile", o.FailoverProfile, "fencing profile of the failover cluster: Critical, Fast, Balanced, Tolerant")
	f.StringSliceVar(&o.FailoverFaults, "failover-faults", o.FailoverFaults, "faults to inject: poweroff, disconnect, freeze")
	f.IntVar(&o.FailoverRuns, "failover-runs", o.FailoverRuns, "failovers per fault")
	f.StringSliceVar(&o.FalseFencingProfiles, "false-fencing-profiles", o.FalseFencingProfiles, "fencing profiles of the false-fencing benchmark, one cluster each")
	f.DurationVar(&o.FalseFencingDuration, "false-fencing-duration", o.FalseFencingDuration, "how long each false-fencing cluster runs under load")
	f.StringSliceVar(&o.ScaleSizes, "scale-sizes", o.ScaleSizes, "simulated cluster sizes of the scale benchmark, NODESxVMS_PER_NODE, one run each")
	f.Float64Var(&o.ScaleEvacuate, "scale-evacuate", o.ScaleEvacuate, "share of the nodes the scale benchmark drains at once")
	f.IntVar(&o.ScaleFail, "scale-fail", o.ScaleFail, "nodes that fail at once in the scale benchmark")
	return cmd
}

// selfPath is how this program was called, relative to the working directory when it
// lies below it.
func selfPath() string {
	self := os.Args[0]
	wd, err := os.Getwd()
	if err != nil || !filepath.IsAbs(self) {
		return self
	}
	rel, err := filepath.Rel(wd, self)
	switch {
	case err != nil || strings.HasPrefix(rel, ".."):
		return self
	case !strings.Contains(rel, "/"):
		return "./" + rel // not a name to look up in $PATH
	}
	return rel
}
