// Package chaos runs a short chaos run on simulated nodes (ferry-bench chaos): every fault
// once, during a migration, a drain or a failover, with the invariants checked after each.
package chaos

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ferryvm/ferry/internal/bench/chaos"
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard()) // the clients' own logging is noise here
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	os.Exit(m.Run())
}

// options are a chaos run on 3 simulated nodes of the ferry binary FERRY_BIN, printing
// into out.
func options(t *testing.T, out *bytes.Buffer) chaos.ChaosOptions {
	bin := os.Getenv("FERRY_BIN")
	if bin == "" {
		t.Fatal("FERRY_BIN must name the ferry binary (make build; scripts/test.sh sets it)")
	}
	o := chaos.DefaultChaosOptions()
	o.Ferry, o.Port, o.Nodes, o.Out = bin, 18743, 3, out
	return o
}

func TestEveryFaultOnce(t *testing.T) {
	var out bytes.Buffer
	o := options(t, &out)
	o.VMs, o.Seed = 4, 11
	o.Settle = 2 * time.Minute
	o.Plan = []string{"migrate+kill-source-launcher", "migrate+kill-target-launcher", "drain+kill-agent",
		"failover+freeze-agent", "migrate+cut-network", "drain+restart-controller", "failover+restart-apiserver", "drain+none"}
	o.Trials = len(o.Plan)
	res, err := chaos.RunChaos(t.Context(), o)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Trials != len(o.Plan) || res.Violations != 0 {
		t.Fatalf("%d trials, %d with a violation: %v", res.Trials, res.Violations, res.Failed)
	}
}

// With watchdogs that never fire, a node cut off longer than the fencing timeout runs on
// while the cluster restarts its VMs elsewhere: the chaos run must report it.
func TestBrokenWatchdogIsCaught(t *testing.T) {
	var out bytes.Buffer
	o := options(t, &out)
	// Seed 1 cuts the source node (not the target's), at once: its agent never hears of
	// the migration, and the VM stays there.
	o.VMs, o.Seed = 2, 1
	o.Settle, o.Hold, o.Delay, o.BrokenWatchdog = 90*time.Second, 20*time.Second, time.Millisecond, true
	o.Plan = []string{"migrate+cut-network"}
	o.Trials = 1
	res, err := chaos.RunChaos(t.Context(), o)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Violations != 1 || !strings.Contains(res.Failed[0], "ran in two places at once") {
		t.Fatalf("the split brain went unreported: %+v", res)
	}
}
