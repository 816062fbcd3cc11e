// Package report runs `ferry-bench report`: every benchmark in turn (packages migration,
// drain, failover, scale; RunReport), then writes their results to docs/benchmarks.md
// (WriteReport, RenderMarkdown) with PNG plots beside it (WritePlots) and the machine
// they ran on.
package report
