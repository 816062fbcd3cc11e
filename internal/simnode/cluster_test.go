package simnode

import (
	"testing"
)

func TestGuestsOverlaps(t *testing.T) {
	g := NewGuests()
	a := "/s/sim-001/pods/uid-a"
	b := "/s/sim-002/pods/uid-b"
	// A migration: the source stops before the target runs.
	g.Observe("ns/vm", a, true)
	g.Observe("ns/vm", a, false)
	g.Observe("ns/vm", b, true)
	r := g.Report()
	if len(r.Overlaps) != 0 || len(r.Running["ns/vm"]) != 1 || r.Running["ns/vm"][0] != "sim-002/uid-b" || r.Starts["ns/vm"] != 2 {
		t.Fatalf("after a handover: %+v", r)
	}
	// A second guest starts while the first runs: split brain.
	g.Observe("ns/vm", a, true)
	r = g.Report()
	if len(r.Overlaps) != 1 || r.Overlaps[0].VM != "ns/vm" || len(r.Overlaps[0].Instances) != 2 {
		t.Fatalf("two running guests not reported: %+v", r)
	}
	// A repeated start of a running guest is no new start; another VM is independent.
	g.Observe("ns/vm", a, true)
	g.Observe("ns/other", a, true)
	r = g.Report()
	if len(r.Overlaps) != 1 || r.Starts["ns/vm"] != 3 || r.Starts["ns/other"] != 1 {
		t.Fatalf("%+v", r)
	}
}
