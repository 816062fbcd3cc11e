package pinger

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

var (
	loopback = netip.MustParseAddr("127.0.0.1")
	t0       = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
)

const ms = time.Millisecond

// needRoot skips tests that open raw sockets or change the network.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: a Pinger opens a raw ICMP socket (CAP_NET_RAW), and the outage test creates a network namespace")
	}
}

// waitFor polls cond every 5 ms until it holds, and fails the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", limit, what)
		}
		time.Sleep(5 * ms)
	}
}

// checkAllAnswered checks a run that should have lost nothing.
func checkAllAnswered(t *testing.T, name string, r Result, minSent int) {
	t.Helper()
	if r.Sent < minSent || r.Received != r.Sent || r.Lost != 0 || r.Late != 0 || r.SendErrors != 0 || r.Duplicates != 0 {
		t.Errorf("%s: %s; want at least %d sent, all received once", name, r, minSent)
	}
	if d := r.Downtime(); d != 0 || len(r.Outages()) != 0 {
		t.Errorf("%s: downtime %v, outages %v; want none", name, d, r.Outages())
	}
	for i, pr := range r.Probes {
		if pr.Seq != i || pr.RTT <= 0 || pr.RTT > DefaultTimeout {
			t.Errorf("%s: probe %d: %+v", name, i, pr)
		}
	}
}

// logSpacing reports how well the run kept its cadence, and fails when it is far off.
func logSpacing(t *testing.T, name string, r Result) {
	t.Helper()
	mean, largest := r.Spacing()
	t.Logf("%s: %s; send spacing mean %v, max %v", name, r, mean, largest)
	if mean < r.Interval*9/10 || mean > r.Interval*3/2 {
		t.Errorf("%s: mean send spacing %v for an interval of %v", name, mean, r.Interval)
	}
}

func TestLoopback(t *testing.T) {
	needRoot(t)
	p, err := Start(t.Context(), Options{Target: loopback})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * ms)
	stopping := time.Now()
	r := p.Stop()
	// Every reply is in, so Stop need not wait for the timeout.
	if d := time.Since(stopping); d > DefaultTimeout/2 {
		t.Errorf("Stop took %v", d)
	}
	checkAllAnswered(t, "loopback", r, 20)
	logSpacing(t, "loopback", r)
	if r.Target != loopback || r.Interval != DefaultInterval {
		t.Errorf("result of %s every %v", r.Target, r.Interval)
	}
	if again := p.Stop(); !reflect.DeepEqual(again, r) {
		t.Errorf("second Stop: %s, first: %s", again, r)
	}
	if again := p.Snapshot(); !reflect.DeepEqual(again, r) {
		t.Errorf("Snapshot after Stop: %s, Stop: %s", again, r)
	}
}

func TestTwoPingersAtOnce(t *testing.T) {
	needRoot(t)
	var ps [2]*Pinger
	for i := range ps {
		p, err := Start(t.Context(), Options{Target: loopback})
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
	}
	if ps[0].id == ps[1].id {
		t.Fatalf("both pingers use identifier %d", ps[0].id)
	}
	time.Sleep(300 * ms)
	var rs [2]Result
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Go(func() { rs[i] = p.Stop() })
	}
	wg.Wait()
	for i, r := range rs {
		name := fmt.Sprintf("pinger %d", i)
		checkAllAnswered(t, name, r, 20)
		logSpacing(t, name, r)
	}
}

// TestForeignReplies pings the loopback address while another socket sends echo
// requests with the same identifier and sequence numbers but another payload, as an
// unrelated ping process might: their replies must not count.
func TestForeignReplies(t *testing.T) {
	needRoot(t)
	p, err := Start(t.Context(), Options{Target: loopback})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenIP("ip4:icmp", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for seq := range 30 {
		m := icmp.Message{
			Type: ipv4.ICMPTypeEcho,
			Body: &icmp.Echo{ID: int(p.id), Seq: seq, Data: make([]byte, payloadLen)},
		}
		b, err := m.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.WriteToIP(b, &net.IPAddr{IP: loopback.AsSlice()}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * ms)
	}
	checkAllAnswered(t, "pinger", p.Stop(), 20)
}

func TestContextEndsRun(t *testing.T) {
	needRoot(t)
	ctx, cancel := context.WithTimeout(t.Context(), 100*ms)
	defer cancel()
	p, err := Start(ctx, Options{Target: loopback})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("the run did not end with its context")
	}
	r := p.Snapshot()
	checkAllAnswered(t, "after the context", r, 5)
	time.Sleep(50 * ms)
	if again := p.Stop(); !reflect.DeepEqual(again, r) {
		t.Errorf("Stop after the context ended: %s; the final snapshot: %s", again, r)
	}
}

// ip runs the ip command and fails the test when it fails.
func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// freeSubnet returns a /30 of the 198.18.0.0/15 test range that no address or route of
// this network namespace uses, starting from one derived from the process id.
func freeSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for k := range 250 {
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte((os.Getpid() + k) % 250), 0}), 30)
		used := false
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ones, _ := n.Mask.Size()
				addr, _ := netip.AddrFromSlice(n.IP)
				used = used || netip.PrefixFrom(addr.Unmap(), ones).Masked().Overlaps(subnet)
			}
		}
		// Routes to the subnet or to parts of it, in any table.
		out, err := exec.Command("ip", "-4", "route", "show", "table", "all", "root", subnet.String()).CombinedOutput()
		if err != nil {
			t.Fatalf("ip route show: %v: %s", err, out)
		}
		if !used && strings.TrimSpace(string(out)) == "" {
			return subnet
		}
	}
	t.Fatal("no free /30 in 198.19.0.0/16")
	return netip.Prefix{}
}

// veth is a veth pair from the test's network namespace to a namespace of its own.
type veth struct {
	ns, hostIf, nsIf string
	hostAddr, nsAddr netip.Addr
}

// newVeth creates a namespace and a veth pair into it, with the two addresses of a free
// /30, and deletes them when the test ends. tag tells apart the pairs of one process.
//
// With pin, the host's neighbour entry for the far end is permanent. The kernel drops
// the neighbour entries of a link that loses its carrier; probes to the far end then
// wait in the queue of an unresolved entry until the next ARP attempt, up to a second
// later, and are answered in a burst (see TestQueuedProbes). Pinned, they are dropped
// while the link is down, and the outage is what the test made it.
func newVeth(t *testing.T, tag string, pin bool) veth {
	t.Helper()
	pid := os.Getpid()
	v := veth{
		ns:     fmt.Sprintf("ferry-pingtest-%d-%s", pid, tag),
		hostIf: fmt.Sprintf("fpt%d%sh", pid, tag),
		nsIf:   fmt.Sprintf("fpt%d%sn", pid, tag),
	}
	subnet := freeSubnet(t)
	v.hostAddr = subnet.Addr().Next()
	v.nsAddr = v.hostAddr.Next()
	const nsMAC = "02:00:00:00:00:02"

	// Deleting the namespace deletes its end of the pair and with it ours; the link is
	// deleted first anyway in case the namespace is not there.
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", v.hostIf).Run()
		_ = exec.Command("ip", "netns", "del", v.ns).Run()
	})
	ip(t, "netns", "add", v.ns)
	ip(t, "link", "add", v.hostIf, "type", "veth", "peer", "name", v.nsIf, "address", nsMAC, "netns", v.ns)
	ip(t, "addr", "add", netip.PrefixFrom(v.hostAddr, 30).String(), "dev", v.hostIf)
	ip(t, "link", "set", v.hostIf, "up")
	ip(t, "-n", v.ns, "addr", "add", netip.PrefixFrom(v.nsAddr, 30).String(), "dev", v.nsIf)
	ip(t, "-n", v.ns, "link", "set", v.nsIf, "up")
	if pin {
		ip(t, "neigh", "replace", v.nsAddr.String(), "lladdr", nsMAC, "dev", v.hostIf, "nud", "permanent")
	}
	return v
}

// answeredAfter counts the answered probes of r sent at or after since.
func answeredAfter(r Result, since time.Time) int {
	n := 0
	for _, pr := range r.Probes {
		if pr.Answered && !pr.Sent.Before(since) {
			n++
		}
	}
	return n
}

// interrupt pings the far end of v, runs the command down, waits about period, runs
// the command up, and returns the result once replies came back, with the bounds of
// the interruption: the shortest (from the end of down to the start of up) and the
// longest (from the start of down to the end of up).
func interrupt(t *testing.T, v veth, period time.Duration, down, up []string) (r Result, shortest, longest time.Duration, from, to time.Time) {
	t.Helper()
	p, err := Start(t.Context(), Options{Target: v.nsAddr, Source: v.hostAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	waitFor(t, 5*time.Second, "20 replies", func() bool { return p.Snapshot().Received >= 20 })

	// The interruption is the stimulus, so a plain sleep sets its length; time.Now
	// around the commands bounds when it really began and ended.
	downStart := time.Now()
	ip(t, down...)
	downDone := time.Now()
	time.Sleep(period)
	upStart := time.Now()
	ip(t, up...)
	upDone := time.Now()

	waitFor(t, 5*time.Second, "replies after the interruption", func() bool {
		return answeredAfter(p.Snapshot(), upDone) >= 10
	})
	r = p.Stop()
	t.Logf("%s", r)
	t.Logf("interrupted for %v to %v (ip took %v and %v); outages %+v; longest silence %v",
		upStart.Sub(downDone), upDone.Sub(downStart), downDone.Sub(downStart), upDone.Sub(upStart),
		r.Outages(), r.LongestSilence())
	return r, upStart.Sub(downDone), upDone.Sub(downStart), downStart, upDone
}

// checkOutage checks that r has a single outage, as long as the interruption.
func checkOutage(t *testing.T, r Result, shortest, longest time.Duration, from, to time.Time) {
	t.Helper()
	logSpacing(t, "veth", r)
	outs := r.Outages()
	if r.Lost == 0 || len(outs) != 1 {
		t.Fatalf("%d lost in %d outages; want one outage", r.Lost, len(outs))
	}
	o := outs[0]
	if d := r.Downtime(); d < shortest-2*r.Interval || d > longest+100*ms {
		t.Errorf("downtime %v; the interruption lasted %v to %v", d, shortest, longest)
	}
	if o.From.Before(from.Add(-r.Interval)) || o.To.Before(from.Add(shortest)) {
		t.Errorf("outage from %v to %v; the interruption began at %v", o.From, o.To, from)
	}
	t.Logf("outage of %v (%d probes); first answered probe sent %v after the interruption ended",
		o.Duration, o.Lost, o.To.Sub(to))
	if r.Late != 0 || r.Duplicates != 0 {
		t.Errorf("%d late, %d duplicates; want none", r.Late, r.Duplicates)
	}
	window := r.Between(from.Add(-100*ms), to.Add(100*ms))
	if window.Lost != r.Lost || window.Sent >= r.Sent || window.Downtime() != r.Downtime() {
		t.Errorf("window around the outage: %s; whole run: %s", window, r)
	}
}

// TestOutage takes the far end of a veth pair down for about 200 ms and up again: the
// Pinger must see that one outage.
func TestOutage(t *testing.T) {
	needRoot(t)
	v := newVeth(t, "d", true)
	r, shortest, longest, from, to := interrupt(t, v, 200*ms,
		[]string{"-n", v.ns, "link", "set", v.nsIf, "down"},
		[]string{"-n", v.ns, "link", "set", v.nsIf, "up"})
	checkOutage(t, r, shortest, longest, from, to)
	if r.SendErrors != 0 {
		t.Errorf("%d send errors; want none", r.SendErrors)
	}
}

// TestRouteMissing makes the far end of a veth pair unreachable by route for about
// 100 ms, as at a migration's switchover: every send in that time fails, and each
// failure is a lost probe of one outage, at the usual cadence.
func TestRouteMissing(t *testing.T) {
	needRoot(t)
	v := newVeth(t, "r", true)
	route := netip.PrefixFrom(v.nsAddr, 32).String()
	r, shortest, longest, from, to := interrupt(t, v, 100*ms,
		[]string{"route", "add", "unreachable", route},
		[]string{"route", "del", "unreachable", route})
	checkOutage(t, r, shortest, longest, from, to)
	if r.SendErrors != r.Lost {
		t.Errorf("%d send errors for %d lost; want all lost by failed sends", r.SendErrors, r.Lost)
	}
}

// TestQueuedProbes is TestOutage without the pinned neighbour entry (see newVeth): the
// probes of the outage wait in the neighbour queue and most are answered in a burst
// within the timeout, so Downtime may miss the outage, but LongestSilence must not.
func TestQueuedProbes(t *testing.T) {
	needRoot(t)
	v := newVeth(t, "q", false)
	r, shortest, longest, _, _ := interrupt(t, v, 200*ms,
		[]string{"-n", v.ns, "link", "set", v.nsIf, "down"},
		[]string{"-n", v.ns, "link", "set", v.nsIf, "up"})
	_, _, maxRTT := r.RTT()
	t.Logf("downtime %v, longest silence %v, largest round trip %v", r.Downtime(), r.LongestSilence(), maxRTT)
	if s := r.LongestSilence(); s < shortest-2*r.Interval || s > longest+3*time.Second {
		t.Errorf("longest silence %v; the link was down for %v to %v", s, shortest, longest)
	}
}

func TestProbeIndex(t *testing.T) {
	tests := []struct {
		wire uint16
		sent int
		want int
	}{
		{0, 0, -1},
		{0, 1, 0},
		{1, 1, -1},
		{65535, 10, -1},
		{3, 10, 3},
		{9, 10, 9},
		{65535, 65536, 65535},
		{0, 65536, 0},
		{0, 65537, 65536},
		{65535, 65537, 65535},
		{uint16(69990 % 65536), 70000, 69990},
		{uint16(69999 % 65536), 70000, 69999},
		// Probe 70000 is not sent yet: its low bits belong to probe 70000-65536.
		{uint16(70000 % 65536), 70000, 70000 - 65536},
	}
	for _, tc := range tests {
		if got := probeIndex(tc.wire, tc.sent); got != tc.want {
			t.Errorf("probeIndex(%d, %d) = %d, want %d", tc.wire, tc.sent, got, tc.want)
		}
	}
	// Every probe of the last 65536 maps back, however often the counter wrapped.
	for _, sent := range []int{1, 100, 65535, 65536, 65537, 131072 + 7, 1<<31 + 5} {
		for back := range min(sent, 65536) {
			if got, want := probeIndex(uint16(sent-1-back), sent), sent-1-back; got != want {
				t.Fatalf("probeIndex(%d, %d) = %d, want %d", uint16(want), sent, got, want)
			}
		}
	}
}

// testPinger is a Pinger without a socket, for handle and Snapshot.
func testPinger(n int, sent func(i int) time.Time) *Pinger {
	p := &Pinger{
		target:   netip.MustParseAddr("192.0.2.9"),
		interval: 10 * ms,
		timeout:  time.Second,
		id:       4242,
		cookie:   0x0123456789abcdef,
		replied:  make(chan struct{}, 1),
	}
	for i := range n {
		p.probes = append(p.probes, Probe{Seq: i, Sent: sent(i)})
	}
	return p
}

// reply builds an IPv4 packet with an ICMP message of type typ, as a raw socket
// receives it.
func reply(t *testing.T, typ ipv4.ICMPType, id int, wire uint16, cookie, full uint64) []byte {
	t.Helper()
	data := make([]byte, payloadLen)
	binary.BigEndian.PutUint64(data[0:8], cookie)
	binary.BigEndian.PutUint64(data[8:16], full)
	m := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: int(wire), Data: data}}
	b, err := m.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 20)
	hdr[0] = 0x45 // version 4, header of 5 words
	return append(hdr, b...)
}

func TestHandle(t *testing.T) {
	p := testPinger(20, at)
	src := p.target
	const cookie = 0x0123456789abcdef
	echoReply := func(i int) []byte { return reply(t, ipv4.ICMPTypeEchoReply, 4242, uint16(i), cookie, uint64(i)) }
	recv := func(i int, d time.Duration) time.Time { return at(i).Add(d) }

	// A reply, timed by the kernel.
	p.handle(echoReply(5), src, recv(5, 3*ms), recv(5, 2*ms))
	if pr := p.probes[5]; !pr.Answered || pr.RTT != 2*ms || pr.Duplicates != 0 {
		t.Errorf("reply: %+v", pr)
	}
	select {
	case <-p.replied:
	default:
		t.Error("a reply did not wake the final wait")
	}
	// Its duplicate.
	p.handle(echoReply(5), src, recv(5, 4*ms), time.Time{})
	if pr := p.probes[5]; !pr.Answered || pr.RTT != 2*ms || pr.Duplicates != 1 {
		t.Errorf("duplicate: %+v", pr)
	}
	// Without a kernel timestamp, or with one that cannot be right, the reader's time.
	p.handle(echoReply(6), src, recv(6, 3*ms), time.Time{})
	p.handle(echoReply(7), src, recv(7, 3*ms), recv(7, 5*ms))
	p.handle(echoReply(8), src, recv(8, 3*ms), recv(8, -ms))
	for i := 6; i <= 8; i++ {
		if pr := p.probes[i]; !pr.Answered || pr.RTT != 3*ms {
			t.Errorf("probe %d: %+v, want answered in 3ms", i, pr)
		}
	}
	// A reply after the timeout.
	p.handle(echoReply(9), src, recv(9, 1500*ms), time.Time{})
	if pr := p.probes[9]; pr.Answered || !pr.Late || pr.RTT != 1500*ms {
		t.Errorf("late: %+v", pr)
	}
	r := newResult(p.target, p.interval, p.probes)
	if r.Received != 4 || r.Late != 1 || r.Duplicates != 1 {
		t.Errorf("%s", r)
	}

	// Packets that are not replies to this run's probes.
	for _, o := range []struct {
		name string
		pkt  []byte
		src  netip.Addr
	}{
		{"other identifier", reply(t, ipv4.ICMPTypeEchoReply, 4243, 10, cookie, 10), src},
		{"other cookie", reply(t, ipv4.ICMPTypeEchoReply, 4242, 10, cookie+1, 10), src},
		{"other source", echoReply(10), netip.MustParseAddr("192.0.2.10")},
		{"echo request", reply(t, ipv4.ICMPTypeEcho, 4242, 10, cookie, 10), src},
		{"not sent yet", echoReply(20), src},
		{"other counter", reply(t, ipv4.ICMPTypeEchoReply, 4242, 10, cookie, 11), src},
		{"truncated", echoReply(10)[:30], src},
		{"short", []byte{0x45, 0}, src},
	} {
		before := slices.Clone(p.probes)
		p.handle(o.pkt, o.src, recv(10, ms), time.Time{})
		if !reflect.DeepEqual(p.probes, before) {
			t.Errorf("%s: changed the probes", o.name)
		}
	}
}

func TestHandleAfterWrap(t *testing.T) {
	p := testPinger(70000, at)
	const cookie = 0x0123456789abcdef
	// Probe 69990 is on the wire as 4454.
	p.handle(reply(t, ipv4.ICMPTypeEchoReply, 4242, 69990%65536, cookie, 69990), p.target, at(69990).Add(ms), time.Time{})
	if pr := p.probes[69990]; !pr.Answered || pr.RTT != ms {
		t.Errorf("after the wrap: %+v", pr)
	}
	if pr := p.probes[69990-65536]; pr.Answered || pr.Late || pr.Duplicates != 0 {
		t.Errorf("a lap before: %+v", pr)
	}
	// A reply so late that its wire number came round again names probe 4455 in
	// full: it must not be taken for probe 69991, whose low bits are the same.
	p.handle(reply(t, ipv4.ICMPTypeEchoReply, 4242, 69991%65536, cookie, 69991-65536), p.target, at(69991).Add(ms), time.Time{})
	for _, i := range []int{69991, 69991 - 65536} {
		if pr := p.probes[i]; pr.Answered || pr.Late || pr.Duplicates != 0 {
			t.Errorf("reply from a lap ago changed probe %d: %+v", i, pr)
		}
	}
}

func TestSnapshotLeavesOutAwaited(t *testing.T) {
	now := time.Now()
	ages := []time.Duration{3 * time.Second, 2 * time.Second, 1500 * ms, 500 * ms, 100 * ms}
	p := testPinger(len(ages), func(i int) time.Time { return now.Add(-ages[i]) })
	p.probes[0].Answered = true // old, answered
	// probe 1: old, no reply: lost
	p.probes[2].SendFailed = true // old, failed
	// probe 3: young, no reply yet: left out
	p.probes[4].Answered = true // young, answered

	r := p.Snapshot()
	var seqs []int
	for _, pr := range r.Probes {
		seqs = append(seqs, pr.Seq)
	}
	if !reflect.DeepEqual(seqs, []int{0, 1, 2, 4}) || r.Sent != 4 || r.Lost != 2 || r.Received != 2 {
		t.Errorf("during the run: probes %v, %s", seqs, r)
	}
	p.over = true
	if r := p.Snapshot(); r.Sent != 5 || r.Lost != 3 {
		t.Errorf("after the run: %s", r)
	}
}

func TestOptions(t *testing.T) {
	o, err := Options{Target: netip.MustParseAddr("::ffff:10.66.10.5")}.withDefaults()
	if err != nil || o.Target != netip.MustParseAddr("10.66.10.5") || o.Interval != DefaultInterval || o.Timeout != DefaultTimeout {
		t.Errorf("defaults: %+v, %v", o, err)
	}
	for _, bad := range []Options{
		{},
		{Target: netip.MustParseAddr("fd00::1")},
		{Target: loopback, Source: netip.MustParseAddr("fd00::2")},
		{Target: loopback, Interval: -ms},
		{Target: loopback, Timeout: -ms},
		{Target: loopback, Interval: ms, Timeout: time.Minute},
	} {
		if _, err := Start(t.Context(), bad); err == nil {
			t.Errorf("Start(%+v) did not fail", bad)
		} else {
			t.Logf("Start(%+v): %v", bad, err)
		}
	}
}
