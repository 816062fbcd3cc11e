package agent

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestPeersOutage asks peers that share one port on different loopback addresses, as
// nodes do.
func TestPeersOutage(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, ps, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	port, _ := strconv.Atoi(ps)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serve := func(ip string, reachable bool) {
		p := &peers{self: ip, reachable: func() (bool, time.Time) { return reachable, time.Now() }}
		go func() { _ = p.serve(ctx, net.JoinHostPort(ip, ps)) }()
	}
	serve("127.0.0.21", false)
	serve("127.0.0.22", false)
	serve("127.0.0.23", true)
	me := &peers{self: "a", port: port, maxUnreachable: 0.49,
		addrs: map[string]string{"b": "127.0.0.21", "c": "127.0.0.22", "d": "127.0.0.23"}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		outage, seen := me.outage(ctx, time.Second)
		if outage {
			t.Logf("seen: %s", seen)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no outage seen with 3 of 4 nodes cut from the control plane: %s", seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// With one more node that reaches the control plane, 3 of 5 is still over 49 %; with
	// two of five it is not.
	me.addrs["d"] = "127.0.0.23"
	me.addrs["e"] = "127.0.0.24" // silent
	me.addrs["b"] = "127.0.0.23"
	if outage, seen := me.outage(ctx, time.Second); outage {
		t.Errorf("outage with 2 of 5 nodes cut off: %s", seen)
	}
	// A node that hears from no peer is cut off alone, however few nodes it knows of.
	alone := &peers{self: "a", port: port, maxUnreachable: 0.49, addrs: map[string]string{"b": "127.0.0.25"}}
	if outage, seen := alone.outage(ctx, 300*time.Millisecond); outage {
		t.Errorf("outage without a peer that confirms it: %s", seen)
	}
	// One of two, when the other confirms, is.
	pair := &peers{self: "a", port: port, maxUnreachable: 0.49, addrs: map[string]string{"b": "127.0.0.21"}}
	if outage, seen := pair.outage(ctx, time.Second); !outage {
		t.Errorf("no outage with both nodes of two cut off: %s", seen)
	}
}
