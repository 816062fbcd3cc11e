package report

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/ferryvm/ferry/internal/bench"
	"github.com/ferryvm/ferry/internal/bench/failover"
	"github.com/ferryvm/ferry/internal/bench/scale"
)

// Plot is one PNG of a report.
type Plot struct {
	// Section is the part the plot belongs to: migration, failover, scale.
	Section string
	// File is its name in the report's plots directory; Title what it shows.
	File, Title string
	// Err says why it could not be drawn.
	Err string
}

const plotWidth, plotHeight = 16 * vg.Centimeter, 10 * vg.Centimeter

// WritePlots draws the plots of r that have something to show into dir as PNG files: the
// migration times and downtime against guest memory, the failover phases per run, and the
// scale figures against the number of VMs. Every point is a figure of r; a plot with
// nothing to show is removed from dir.
func WritePlots(dir string, r Report) []Plot {
	var plots []Plot
	add := func(section, file, title string, p *plot.Plot) {
		if p == nil {
			// Nothing to show; the plot of an earlier report goes, as its figures are not
			// this report's.
			_ = os.Remove(filepath.Join(dir, file))
			return
		}
		pl := Plot{Section: section, File: file, Title: title}
		p.Title.Text = title
		if err := p.Save(plotWidth, plotHeight, filepath.Join(dir, file)); err != nil {
			pl.Err = err.Error()
		}
		plots = append(plots, pl)
	}
	add(partMigration, "migration-e2e.png", "Live migration end to end (median)", migrationPlot(r.Migration, bench.E2EOf, "seconds", time.Second))
	add(partMigration, "migration-transfer.png", "QEMU transfer time of a live migration (median)", migrationPlot(r.Migration, bench.TransferOf, "seconds", time.Second))
	add(partMigration, "migration-downtime.png", "Switchover downtime of a live migration (median)", migrationPlot(r.Migration, bench.DowntimeOf, "milliseconds", time.Millisecond))
	add(partFailover, "failover-phases.png", "Failover phases per run", failoverPlot(r.Failover.Result))
	add(partScale, "scale-reconcile.png", "VM controller reconcile time (bucket upper bound)", scaleReconcilePlot(r.Scale))
	add(partScale, "scale-per-vm.png", "Per-VM time of evacuations and failures", scalePerVMPlot(r.Scale))
	return plots
}

// plotLine is one named line of a plot: x → y.
type plotLine struct {
	name string
	pts  plotter.XYs
}

// linePlot draws lines against x, with ticks at the xs the lines have; nil when no line
// has a point.
func linePlot(lines []plotLine, xLabel, yLabel string, xTick func(float64) string) *plot.Plot {
	var xs []float64
	for _, l := range lines {
		for _, p := range l.pts {
			if !slices.Contains(xs, p.X) {
				xs = append(xs, p.X)
			}
		}
	}
	if len(xs) == 0 {
		return nil
	}
	slices.Sort(xs)
	p := plot.New()
	p.X.Label.Text, p.Y.Label.Text = xLabel, yLabel
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Add(plotter.NewGrid())
	var ticks []plot.Tick
	for _, x := range xs {
		ticks = append(ticks, plot.Tick{Value: x, Label: xTick(x)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	for i, l := range lines {
		if len(l.pts) == 0 {
			continue
		}
		slices.SortFunc(l.pts, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		ln, sc, err := plotter.NewLinePoints(l.pts)
		if err != nil {
			continue // a NaN or an infinity: never a figure of a report
		}
		ln.Color, sc.Color = plotutil.Color(i/2), plotutil.Color(i/2)
		ln.Dashes = plotutil.Dashes(i % 2)
		sc.Shape = plotutil.Shape(i % 2)
		p.Add(ln, sc)
		p.Legend.Add(l.name, ln, sc)
	}
	p.Y.Min = 0
	legendRoom(p, drawnLines(lines), false)
	return p
}

// drawnLines counts the lines with points: the legend's entries.
func drawnLines(lines []plotLine) int {
	n := 0
	for _, l := range lines {
		if len(l.pts) > 0 {
			n++
		}
	}
	return n
}

// legendRoom raises the top of the Y axis so that the legend in the top corner, entries
// lines, covers no point.
func legendRoom(p *plot.Plot, entries int, log bool) {
	share := min(0.6, 0.05+0.06*float64(entries)) // of the axis' height
	if log {
		decades := math.Log10(p.Y.Max / p.Y.Min)
		p.Y.Max *= math.Pow(10, decades*share/(1-share))
		return
	}
	p.Y.Max = p.Y.Min + (p.Y.Max-p.Y.Min)/(1-share)
}

// migrationPlot is one duration of Ferry's and the raw migrations against guest memory,
// one line per scenario and system.
func migrationPlot(parts []MigrationPart, f func(bench.Sample) time.Duration, unitName string, unit time.Duration) *plot.Plot {
	var names []string
	pts := map[string]plotter.XYs{}
	for _, p := range parts {
		if p.Result == nil {
			continue
		}
		for _, sc := range p.Result.Scenarios {
			for _, sys := range []struct {
				name string
				s    bench.Series
			}{{"Ferry", sc.Ferry}, {"raw QEMU", sc.Raw}} {
				name := sc.Name + ", " + sys.name
				if !slices.Contains(names, name) {
					names = append(names, name)
				}
				if st := sys.s.Stat(f); !sys.s.Skipped && st.N > 0 {
					pts[name] = append(pts[name], plotter.XY{X: float64(p.Result.MemoryMiB), Y: float64(st.Median) / float64(unit)})
				}
			}
		}
	}
	var lines []plotLine
	for _, n := range names {
		lines = append(lines, plotLine{name: n, pts: pts[n]})
	}
	return linePlot(lines, "guest memory (MiB)", unitName, func(x float64) string { return fmt.Sprintf("%.0f", x) })
}

// failoverPlot stacks the phases of each run that got to the new guest's heartbeat, each
// one of them (new pod, scheduled and pod running too, however short). The VM's phase
// Running is no step of the stack (it may come before or after the heartbeat): not drawn.
func failoverPlot(rep *failover.FailoverReport) *plot.Plot {
	if rep == nil {
		return nil
	}
	var labels []string
	var phases [failover.PhaseBoot + 1]plotter.Values
	for _, run := range rep.Runs {
		ph := run.Marks.Phases()
		if !ph[failover.PhaseTotal].OK {
			continue
		}
		labels = append(labels, fmt.Sprintf("%s #%d", run.Fault, run.Run))
		for i := range phases {
			// A phase whose end was not seen is part of the next one (Phases).
			phases[i] = append(phases[i], ph[i].D.Seconds())
		}
	}
	if len(labels) == 0 {
		return nil
	}
	p := plot.New()
	p.Y.Label.Text = "seconds from the fault"
	p.Legend.Top = true
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Add(plotter.NewGrid())
	var below *plotter.BarChart
	for i, vs := range phases {
		bars, err := plotter.NewBarChart(vs, vg.Points(24))
		if err != nil {
			return nil
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		if below != nil {
			bars.StackOn(below)
		}
		below = bars
		p.Add(bars)
		p.Legend.Add(phaseLabels[i], bars)
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = math.Pi / 6 // the labels of many runs overlap when level
	p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = draw.XRight, draw.YCenter
	p.Y.Min = 0
	legendRoom(p, len(phaseLabels), false)
	return p
}

var phaseLabels = [failover.PhaseBoot + 1]string{"detection", "fencing wait", "new pod", "scheduled", "pod running", "boot"}

// scaleReconcilePlot is the VM controller's reconcile p50 and p99 while the VMs start and
// while nodes are evacuated, against the number of VMs; on a log scale, as the buckets are.
func scaleReconcilePlot(parts []ScalePart) *plot.Plot {
	var lines []plotLine
	for _, ph := range []struct {
		name string
		of   func(*scale.ScaleResult) *scale.ScalePhase
	}{{"start", func(r *scale.ScaleResult) *scale.ScalePhase { return r.Start }}, {"evacuate", func(r *scale.ScaleResult) *scale.ScalePhase { return r.Evacuate }}} {
		p50, p99 := plotLine{name: ph.name + " p50"}, plotLine{name: ph.name + " p99"}
		for _, p := range parts {
			if p.Result == nil || ph.of(p.Result) == nil {
				continue
			}
			rt := ph.of(p.Result).Load.Reconcile
			x := float64(p.Nodes * p.VMsPerNode)
			for _, q := range []struct {
				l *plotLine
				b scale.BucketBound
			}{{&p50, rt.P50}, {&p99, rt.P99}} {
				if rt.N > 0 && q.b.OK && !q.b.Inf && q.b.Le > 0 {
					q.l.pts = append(q.l.pts, plotter.XY{X: x, Y: float64(q.b.Le) / float64(time.Millisecond)})
				}
			}
		}
		lines = append(lines, p50, p99)
	}
	p := linePlot(lines, "VMs", "milliseconds (log scale)", func(x float64) string { return fmt.Sprintf("%.0f", x) })
	if p != nil {
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, plot.LogTicks{Prec: -1}
		lo, hi := math.Inf(1), 0.0
		for _, l := range lines {
			for _, pt := range l.pts {
				lo, hi = min(lo, pt.Y), max(hi, pt.Y)
			}
		}
		p.Y.Min, p.Y.Max = lo/2, hi*2 // a log scale cannot show 0
		legendRoom(p, drawnLines(lines), true)
	}
	return p
}

// scalePerVMPlot is the p50 and p99 of each evacuation (one node drained, a share of them
// at once) and of each failed node's VM restarting elsewhere, against the number of VMs.
func scalePerVMPlot(parts []ScalePart) *plot.Plot {
	var lines []plotLine
	for _, ph := range []struct {
		name string
		of   func(*scale.ScaleResult) *scale.ScalePhase
	}{
		{"drain 1 node", func(r *scale.ScaleResult) *scale.ScalePhase { return r.Drain }},
		{"evacuate", func(r *scale.ScaleResult) *scale.ScalePhase { return r.Evacuate }},
		{"fail (to Running elsewhere)", func(r *scale.ScaleResult) *scale.ScalePhase { return r.Failure }},
	} {
		p50, p99 := plotLine{name: ph.name + " p50"}, plotLine{name: ph.name + " p99"}
		for _, p := range parts {
			if p.Result == nil || ph.of(p.Result) == nil || len(ph.of(p.Result).PerVM) == 0 {
				continue
			}
			per, x := ph.of(p.Result).PerVM, float64(p.Nodes*p.VMsPerNode)
			p50.pts = append(p50.pts, plotter.XY{X: x, Y: nearestRank(per, 0.5).Seconds()})
			p99.pts = append(p99.pts, plotter.XY{X: x, Y: nearestRank(per, 0.99).Seconds()})
		}
		lines = append(lines, p50, p99)
	}
	return linePlot(lines, "VMs", "seconds", func(x float64) string { return fmt.Sprintf("%.0f", x) })
}
