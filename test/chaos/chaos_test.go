// Package chaos runs a short chaos run on simulated nodes (ferry-bench chaos): every fault
// once, during a migration, a drain or a failover, with the invariants checked after each.
package chaos

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/bench"
)

func TestEveryFaultOnce(t *testing.T) {
	bin := os.Getenv("FERRY_BIN")
	if bin == "" {
		t.Fatal("FERRY_BIN must name the ferry binary (make build; scripts/test.sh sets it)")
	}
	var out bytes.Buffer
	o := bench.DefaultChaosOptions()
	o.Ferry, o.Port, o.Nodes, o.VMs, o.Seed, o.Out = bin, 18743, 3, 4, 11, &out
	o.Settle = 2 * time.Minute
	o.Plan = []string{"migrate+kill-source-launcher", "migrate+kill-target-launcher", "drain+kill-agent",
		"failover+freeze-agent", "migrate+cut-network", "drain+restart-controller", "failover+restart-apiserver", "drain+none"}
	o.Trials = len(o.Plan)
	res, err := bench.RunChaos(t.Context(), o)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Trials != len(o.Plan) || res.Violations != 0 {
		t.Fatalf("%d trials, %d with a violation: %v", res.Trials, res.Violations, res.Failed)
	}
}
