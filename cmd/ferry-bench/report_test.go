package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportCommandSkipAll runs `ferry-bench report` with every part skipped: no cluster
// starts, and the report shows each part's command as the flags made it.
func TestReportCommandSkipAll(t *testing.T) {
	out := filepath.Join(t.TempDir(), "rep", "benchmarks.md")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := reportCommand()
	var log bytes.Buffer
	cmd.SetOut(&log)
	cmd.SetArgs([]string{"--skip", "migration,drain,failover,false-fencing,scale", "--out", out,
		"--memory-sizes", "128Mi", "--runs", "1", "--scale-sizes", "3x2,4x2", "--failover-faults", "poweroff"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{
		"migration --memory 128Mi --runs 1 --dirty-mib 32` — skipped (--skip migration)",
		"scale --nodes 3 --vms-per-node 2 --evacuate 0.25 --fail 2` — skipped (--skip scale)",
		"scale --nodes 4 --vms-per-node 2 ",
		"failover --profile Fast --faults poweroff --runs 3` — skipped (--skip failover)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(out), "benchmarks")); err != nil {
		t.Errorf("no plots directory: %v", err)
	}

	cmd = reportCommand()
	cmd.SetOut(&log)
	cmd.SetErr(&log)
	cmd.SetArgs([]string{"--skip", "everything", "--out", out})
	if err := cmd.ExecuteContext(context.Background()); err == nil {
		t.Error("--skip everything: no error")
	}
}
