package pinger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

const (
	// DefaultInterval is the time between probes when Options.Interval is zero.
	DefaultInterval = 10 * time.Millisecond
	// DefaultTimeout is how long a reply may take when Options.Timeout is zero.
	DefaultTimeout = time.Second

	// maxWindow bounds Timeout/Interval, the number of probes that may await a reply at
	// once: replies are matched through a 16-bit sequence number (see probeIndex), and
	// half its range leaves ample margin.
	maxWindow = 1 << 15

	// payloadLen is the echo data: the run's cookie and the probe's full counter, both
	// as big-endian uint64.
	payloadLen = 16

	// protocolICMP is the IP protocol number of ICMP, for icmp.ParseMessage.
	protocolICMP = 1
)

// idBase and idCount give each run in this process its own echo identifier. Other
// processes are told apart by the cookie.
var (
	idBase  = uint16(rand.Uint32())
	idCount atomic.Uint32
)

// Options of a ping run.
type Options struct {
	// Target is the IPv4 address to ping.
	Target netip.Addr
	// Interval is the time between probes; DefaultInterval when zero.
	Interval time.Duration
	// Timeout is how long a probe's reply may take: a reply later than this counts as
	// lost. DefaultTimeout when zero; at most 32767 intervals.
	Timeout time.Duration
	// Source, when set, is the local IPv4 address the socket is bound to: probes leave
	// from it and only packets to it are received.
	Source netip.Addr
}

// withDefaults fills in the defaults and checks the options.
func (o Options) withDefaults() (Options, error) {
	if !o.Target.IsValid() {
		return o, errors.New("no ping target")
	}
	o.Target = o.Target.Unmap()
	if !o.Target.Is4() {
		return o, fmt.Errorf("ping target %s is not an IPv4 address", o.Target)
	}
	if o.Source.IsValid() {
		o.Source = o.Source.Unmap()
		if !o.Source.Is4() {
			return o, fmt.Errorf("ping source %s is not an IPv4 address", o.Source)
		}
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Interval < 0 || o.Timeout < 0 {
		return o, fmt.Errorf("ping interval %v and timeout %v must not be negative", o.Interval, o.Timeout)
	}
	if o.Timeout/o.Interval >= maxWindow {
		return o, fmt.Errorf("ping timeout %v is too long for interval %v: at most %d intervals", o.Timeout, o.Interval, maxWindow-1)
	}
	return o, nil
}

// Probe is one echo request and what became of it.
type Probe struct {
	// Seq counts the run's probes from 0; its low 16 bits are the wire sequence number.
	Seq int
	// Sent is when the probe was sent (just before it was handed to the kernel).
	Sent time.Time
	// RTT is the round trip time of the first reply, when Answered or Late.
	RTT time.Duration
	// Answered tells whether a reply came within the timeout.
	Answered bool
	// Late tells whether a reply came only after the timeout; the probe counts as lost.
	Late bool
	// SendFailed tells whether sending failed (e.g. no route); the probe counts as lost.
	SendFailed bool
	// Duplicates counts replies after the first.
	Duplicates int
}

// awaiting tells whether the probe may still be answered at now.
func (pr Probe) awaiting(now time.Time, timeout time.Duration) bool {
	return !pr.Answered && !pr.Late && !pr.SendFailed && now.Sub(pr.Sent) <= timeout
}

// Pinger is one ping run, from Start to Stop.
type Pinger struct {
	target   netip.Addr
	dst      *net.IPAddr
	interval time.Duration
	timeout  time.Duration
	id       uint16
	cookie   uint64
	conn     *net.IPConn

	stop       chan struct{} // closed by Stop
	stopOnce   sync.Once
	replied    chan struct{} // the reader matched a reply (capacity 1: a wake-up, not a count)
	quit       atomic.Bool   // tells the reader to return
	readerDone chan struct{} // closed when the reader returned
	done       chan struct{} // closed when the run is over and the socket closed

	mu     sync.Mutex
	probes []Probe // in send order: probes[i].Seq == i
	over   bool    // the run is over: no probe awaits a reply any more
}

// Start opens a privileged raw ICMP socket ("ip4:icmp") and sends one echo request to
// o.Target every Interval, the first at once, until Stop is called or ctx ends. Each run
// uses its own ICMP identifier and matches replies by identifier, cookie, sequence
// number and source address, so other pingers and other traffic on the machine do not
// disturb it.
func Start(ctx context.Context, o Options) (*Pinger, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, err := listen(o.Source)
	if err != nil {
		return nil, err
	}
	p := &Pinger{
		target:     o.Target,
		dst:        &net.IPAddr{IP: o.Target.AsSlice()},
		interval:   o.Interval,
		timeout:    o.Timeout,
		id:         idBase + uint16(idCount.Add(1)),
		cookie:     rand.Uint64(),
		conn:       conn,
		stop:       make(chan struct{}),
		replied:    make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	go p.read()
	go p.run(ctx)
	return p, nil
}

// listen opens the raw socket, bound to src when it is valid.
func listen(src netip.Addr) (*net.IPConn, error) {
	var laddr *net.IPAddr
	if src.IsValid() {
		laddr = &net.IPAddr{IP: src.AsSlice()}
	}
	conn, err := net.ListenIP("ip4:icmp", laddr)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("opening a raw ICMP socket needs root or CAP_NET_RAW: %w", err)
		}
		return nil, fmt.Errorf("opening a raw ICMP socket: %w", err)
	}
	// Both options are optimizations, so failures are ignored: the reader checks every
	// packet anyway, and takes its own time when the kernel gives none.
	//
	// Let only echo replies through; without the filter the socket also receives every
	// other ICMP packet, including our own echo requests when the target is local.
	var f ipv4.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv4.ICMPTypeEchoReply)
	_ = ipv4.NewPacketConn(conn).SetICMPFilter(&f)
	// Ask for the kernel's receive timestamp of each packet.
	if rc, err := conn.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		})
	}
	return conn, nil
}

// Done is closed when the run is over, after Stop or the end of the context and the
// wait for the last replies; Snapshot then returns the final result.
func (p *Pinger) Done() <-chan struct{} { return p.done }

// Stop stops sending, waits up to Timeout for replies to the last probes, and returns
// the result. It may be called more than once, also concurrently, and after the context
// ended: every call returns the same result.
func (p *Pinger) Stop() Result {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	return p.Snapshot()
}

// Snapshot returns the result so far without stopping. Probes younger than Timeout that
// have no reply yet are left out, not counted as lost; after the run is over nothing is
// left out. It copies every probe of the run.
func (p *Pinger) Snapshot() Result {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	probes := make([]Probe, 0, len(p.probes))
	for _, pr := range p.probes {
		if !p.over && pr.awaiting(now, p.timeout) {
			continue
		}
		probes = append(probes, pr)
	}
	return newResult(p.target, p.interval, probes)
}

// run sends the probes, then waits for the last replies and closes the socket.
func (p *Pinger) run(ctx context.Context) {
	defer close(p.done)
	ticker := time.NewTicker(p.interval)
	p.send()
sending:
	for {
		select {
		case <-ticker.C:
			p.send()
		case <-p.stop:
			break sending
		case <-ctx.Done():
			break sending
		}
	}
	ticker.Stop()
	p.awaitLastReplies()

	// A deadline in the past wakes the reader from its read at once.
	p.quit.Store(true)
	_ = p.conn.SetReadDeadline(time.Unix(1, 0))
	<-p.readerDone
	_ = p.conn.Close()
	p.mu.Lock()
	p.over = true
	p.mu.Unlock()
}

// send sends the next probe. Only run calls it, so len(p.probes) changes only here.
func (p *Pinger) send() {
	p.mu.Lock()
	seq := len(p.probes)
	p.mu.Unlock()
	msg, err := p.echoRequest(seq)

	// The probe is recorded before it leaves, so that its reply always finds it.
	now := time.Now()
	p.mu.Lock()
	p.probes = append(p.probes, Probe{Seq: seq, Sent: now})
	p.mu.Unlock()
	if err == nil {
		// A send that cannot finish before the next probe is due has failed: the
		// cadence matters more than any one probe.
		_ = p.conn.SetWriteDeadline(now.Add(p.interval))
		_, err = p.conn.WriteToIP(msg, p.dst)
	}
	if err != nil {
		p.mu.Lock()
		p.probes[seq].SendFailed = true
		p.mu.Unlock()
	}
}

// echoRequest is the ICMP message of probe seq.
func (p *Pinger) echoRequest(seq int) ([]byte, error) {
	data := make([]byte, payloadLen)
	binary.BigEndian.PutUint64(data[0:8], p.cookie)
	binary.BigEndian.PutUint64(data[8:16], uint64(seq))
	m := icmp.Message{
		Type: ipv4.ICMPTypeEcho,
		Body: &icmp.Echo{ID: int(p.id), Seq: int(uint16(seq)), Data: data},
	}
	return m.Marshal(nil)
}

// awaitLastReplies returns once no probe awaits a reply, or when the last probe's
// timeout ran out.
func (p *Pinger) awaitLastReplies() {
	p.mu.Lock()
	last := p.probes[len(p.probes)-1].Sent
	p.mu.Unlock()
	timer := time.NewTimer(time.Until(last.Add(p.timeout)))
	defer timer.Stop()
	for p.anyAwaiting() {
		select {
		case <-p.replied:
		case <-timer.C:
			return
		}
	}
}

// anyAwaiting tells whether some probe may still be answered.
func (p *Pinger) anyAwaiting() bool {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	// Only the probes of the last Timeout can await a reply.
	for i := len(p.probes) - 1; i >= 0 && now.Sub(p.probes[i].Sent) <= p.timeout; i-- {
		if p.probes[i].awaiting(now, p.timeout) {
			return true
		}
	}
	return false
}

// read receives packets until run sets quit. It holds no lock while blocked.
func (p *Pinger) read() {
	defer close(p.readerDone)
	buf := make([]byte, 1<<16)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := p.conn.ReadMsgIP(buf, oob)
		now := time.Now()
		if p.quit.Load() || errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Nothing but the deadline and Close should fail a raw read; should
			// anything else, do not spin on it.
			time.Sleep(time.Millisecond)
			continue
		}
		src, _ := netip.AddrFromSlice(from.IP)
		p.handle(buf[:n], src.Unmap(), now, kernelTime(oob[:oobn]))
	}
}

// kernelTime is the receive timestamp in a packet's control messages, or the zero time.
func kernelTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS {
			continue
		}
		// A struct timespec: two longs.
		switch len(m.Data) {
		case 16:
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return time.Unix(sec, nsec)
		case 8:
			sec := int32(binary.NativeEndian.Uint32(m.Data[0:4]))
			nsec := int32(binary.NativeEndian.Uint32(m.Data[4:8]))
			return time.Unix(int64(sec), int64(nsec))
		}
	}
	return time.Time{}
}

// handle records pkt, an IPv4 packet from src received at now (by the clock of this
// process) and at kernel (by the kernel's timestamp; zero if none), if it is a reply to
// one of the run's probes.
func (p *Pinger) handle(pkt []byte, src netip.Addr, now, kernel time.Time) {
	if src != p.target {
		return
	}
	// A raw IPv4 socket receives the IP header too.
	if len(pkt) < 20 {
		return
	}
	hlen := int(pkt[0]&0x0f) * 4
	if hlen < 20 || len(pkt) < hlen {
		return
	}
	m, err := icmp.ParseMessage(protocolICMP, pkt[hlen:])
	if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
		return
	}
	echo, ok := m.Body.(*icmp.Echo)
	if !ok || echo.ID != int(p.id) || len(echo.Data) < payloadLen ||
		binary.BigEndian.Uint64(echo.Data[0:8]) != p.cookie {
		return
	}
	full := binary.BigEndian.Uint64(echo.Data[8:16])

	p.mu.Lock()
	defer p.mu.Unlock()
	i := probeIndex(uint16(echo.Seq), len(p.probes))
	if i < 0 || uint64(i) != full {
		return
	}
	pr := &p.probes[i]
	if pr.Answered || pr.Late {
		pr.Duplicates++
		return
	}
	pr.RTT = roundTrip(pr.Sent, now, kernel)
	if pr.RTT <= p.timeout {
		pr.Answered = true
	} else {
		pr.Late = true
	}
	select {
	case p.replied <- struct{}{}:
	default:
	}
}

// probeIndex maps a 16-bit wire sequence number back to a probe counter: the latest of
// the sent probes (counters 0 to sent-1) whose low 16 bits are wire, or -1 when there is
// none. A reply to a probe sent fewer than 65536 probes ago is thus mapped right.
func probeIndex(wire uint16, sent int) int {
	last := sent - 1
	if last < 0 {
		return -1
	}
	// The uint16 subtraction wraps round: it is how many probes back wire lies.
	i := last - int(uint16(last)-wire)
	if i < 0 {
		return -1
	}
	return i
}

// roundTrip is the time from sent to the reply: the kernel's timestamp when it is
// plausible (after sent and not after now; the wall clock may have been set), else now.
func roundTrip(sent, now, kernel time.Time) time.Duration {
	d := now.Sub(sent)
	if !kernel.IsZero() {
		if k := kernel.Sub(sent); k > 0 && k <= d {
			return k
		}
	}
	return d
}
