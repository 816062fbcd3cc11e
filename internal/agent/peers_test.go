package agent

import (
	"context"
	"testing"
	"time"
)

// TestPeersOutage asks peers that share one port on different loopback addresses, as
// nodes do, each with its certificate of the cluster's CA.
func TestPeersOutage(t *testing.T) {
	ca := newCA(t)
	port := freePort(t)
	for _, p := range []struct {
		node, ip  string
		reachable bool
	}{
		{"b", "127.0.0.21", false},
		{"c", "127.0.0.22", false},
		{"d", "127.0.0.23", true},
		{"e", "127.0.0.24", true},
	} {
		servePeer(t, p.ip, port, p.node, p.reachable, fixed(nodeCreds(t, ca, p.node)))
	}
	a := fixed(nodeCreds(t, ca, "a"))
	for _, tc := range []struct {
		name   string
		addrs  map[string]string
		outage bool
	}{
		{"3 of 4 nodes cut off", map[string]string{"b": "127.0.0.21", "c": "127.0.0.22", "d": "127.0.0.23"}, true},
		// One more node that reaches the control plane: 3 of 5 is still over 49 %.
		{"3 of 5", map[string]string{"b": "127.0.0.21", "c": "127.0.0.22", "d": "127.0.0.23", "e": "127.0.0.24"}, true},
		// A silent node counts among all nodes, not among those cut off: 2 of 5.
		{"2 of 5, one silent", map[string]string{"b": "127.0.0.21", "d": "127.0.0.23", "e": "127.0.0.24", "f": "127.0.0.25"}, false},
		// A node that hears from no peer is cut off alone, however few nodes it knows of.
		{"alone", map[string]string{"b": "127.0.0.25"}, false},
		// One of two, when the other confirms, is.
		{"both of two", map[string]string{"b": "127.0.0.21"}, true},
	} {
		me := &peers{self: "a", port: port, maxUnreachable: 0.49, creds: a, addrs: tc.addrs}
		if outage, seen := me.outage(context.Background(), time.Second); outage != tc.outage {
			t.Errorf("%s: outage %v, want %v: %s", tc.name, outage, tc.outage, seen)
		}
	}
}
