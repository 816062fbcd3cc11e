package vmnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	dhcpTestMAC   = net.HardwareAddr{0x02, 0x66, 10, 66, 10, 5}
	dhcpOtherMAC  = net.HardwareAddr{0x02, 0x66, 10, 66, 10, 6}
	dhcpTestXID   = []byte{0xde, 0xad, 0xbe, 0xef}
	dhcpTestRelay = []byte{192, 0, 2, 1}
)

func dhcpTestLease() Lease {
	return Lease{
		MAC:     dhcpTestMAC,
		Address: netip.MustParsePrefix("10.66.10.5/24"),
		Gateway: netip.MustParseAddr("10.66.10.1"),
		Routes: []Route{
			{Dst: netip.MustParsePrefix("10.66.20.0/24"), Via: netip.MustParseAddr("10.66.10.254")},
			{Dst: netip.MustParsePrefix("172.16.0.0/12"), Via: netip.MustParseAddr("10.66.10.254")},
		},
		Hostname: "vm-a",
		MTU:      1450,
		DNS:      []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("1.1.1.1")},
	}
}

// testOpt is one option of a test request.
type testOpt struct {
	code byte
	data []byte
}

func ip4(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

// testRequest builds a DHCP message of type typ from mac, as a client would: broadcast
// flag set, a parameter request list, then opts.
func testRequest(mac net.HardwareAddr, typ byte, ciaddr string, opts ...testOpt) []byte {
	p := make([]byte, 240)
	p[0], p[1], p[2] = 1, 1, 6
	copy(p[4:8], dhcpTestXID)
	p[10] = 0x80
	if ciaddr != "" {
		copy(p[12:16], ip4(ciaddr))
	}
	copy(p[24:28], dhcpTestRelay)
	copy(p[28:], mac)
	copy(p[236:], []byte{99, 130, 83, 99})
	p = append(p, 53, 1, typ, 55, 4, 1, 3, 6, 121)
	for _, o := range opts {
		p = append(append(p, o.code, byte(len(o.data))), o.data...)
	}
	return append(p, 255)
}

// decodedReply is a server reply as the test reads it, independently of the server's parser.
type decodedReply struct {
	ciaddr, yiaddr []byte
	opts           map[byte][]byte
}

func decodeReply(t *testing.T, b []byte) decodedReply {
	t.Helper()
	if b == nil {
		t.Fatal("no reply")
	}
	if len(b) < 300 {
		t.Errorf("reply is %d bytes, want at least 300 (BOOTP minimum)", len(b))
	}
	if len(b) < 240 || b[0] != 2 || b[1] != 1 || b[2] != 6 || !bytes.Equal(b[236:240], []byte{99, 130, 83, 99}) {
		t.Fatalf("reply is not an Ethernet BOOTREPLY with the DHCP cookie: % x", b[:min(len(b), 240)])
	}
	if !bytes.Equal(b[4:8], dhcpTestXID) || !bytes.Equal(b[10:12], []byte{0x80, 0}) ||
		!bytes.Equal(b[24:28], dhcpTestRelay) || !bytes.Equal(b[28:34], dhcpTestMAC) {
		t.Errorf("xid, flags, giaddr or chaddr not copied: % x", b[4:34])
	}
	d := decodedReply{ciaddr: b[12:16], yiaddr: b[16:20], opts: map[byte][]byte{}}
	rest := b[240:]
	for {
		if len(rest) == 0 {
			t.Fatal("options have no End")
		}
		code := rest[0]
		if code == 255 {
			break
		}
		if code == 0 || len(rest) < 2 || len(rest) < 2+int(rest[1]) {
			t.Fatalf("bad option at % x", rest)
		}
		d.opts[code] = append(d.opts[code], rest[2:2+int(rest[1])]...)
		rest = rest[2+int(rest[1]):]
	}
	return d
}

// logRecorder collects log lines; it is safe for concurrent use.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

// count is the number of lines that contain s.
func (r *logRecorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

func TestReplyOffer(t *testing.T) {
	var log logRecorder
	s := newDHCPServer(dhcpTestLease(), log.logf)
	d := decodeReply(t, s.reply(testRequest(dhcpTestMAC, dhcpDiscover, "")))
	if !bytes.Equal(d.yiaddr, ip4("10.66.10.5")) || !bytes.Equal(d.ciaddr, []byte{0, 0, 0, 0}) {
		t.Errorf("yiaddr %v ciaddr %v, want 10.66.10.5 and 0.0.0.0", d.yiaddr, d.ciaddr)
	}
	want := map[byte][]byte{
		53: {dhcpOffer},
		54: ip4("10.66.10.1"),
		51: {0xff, 0xff, 0xff, 0xff},
		1:  {255, 255, 255, 0},
		3:  ip4("10.66.10.1"),
		121: {
			0, 10, 66, 10, 1, // 0.0.0.0/0 via the gateway
			24, 10, 66, 20, 10, 66, 10, 254, // 10.66.20.0/24
			12, 172, 16, 10, 66, 10, 254, // 172.16.0.0/12
		},
		12: []byte("vm-a"),
		26: {0x05, 0xaa},
		6:  {10, 96, 0, 10, 1, 1, 1, 1},
	}
	for code, w := range want {
		if !bytes.Equal(d.opts[code], w) {
			t.Errorf("option %d = %v, want %v", code, d.opts[code], w)
		}
	}
	if len(d.opts) != len(want) {
		t.Errorf("options %v, want exactly %v", d.opts, want)
	}
	if log.count("DHCP OFFER 10.66.10.5 to 02:66:0a:42:0a:05") != 1 {
		t.Errorf("log:\n%s", &log)
	}
}

func TestReplyOptionalOptionsOmitted(t *testing.T) {
	l := dhcpTestLease()
	l.Routes, l.Hostname, l.MTU, l.DNS = nil, "", 0, nil
	d := decodeReply(t, newDHCPServer(l, nil).reply(testRequest(dhcpTestMAC, dhcpDiscover, "")))
	for _, code := range []byte{12, 26, 6} {
		if _, ok := d.opts[code]; ok {
			t.Errorf("option %d sent although unset", code)
		}
	}
	if w := []byte{0, 10, 66, 10, 1}; !bytes.Equal(d.opts[121], w) {
		t.Errorf("option 121 = %v, want %v", d.opts[121], w)
	}
}

func TestReplyRequest(t *testing.T) {
	gw := testOpt{54, ip4("10.66.10.1")}
	tests := []struct {
		name   string
		ciaddr string
		opts   []testOpt
		want   byte // 0: no reply
	}{
		{"selecting", "", []testOpt{{50, ip4("10.66.10.5")}, gw}, dhcpAck},
		{"init-reboot", "", []testOpt{{50, ip4("10.66.10.5")}}, dhcpAck},
		{"renewing", "10.66.10.5", nil, dhcpAck},
		{"init-reboot elsewhere", "", []testOpt{{50, ip4("192.168.1.7")}}, dhcpNak},
		{"selecting another address", "", []testOpt{{50, ip4("10.66.10.6")}, gw}, dhcpNak},
		{"renewing another address", "10.66.10.9", nil, dhcpNak},
		{"another server", "", []testOpt{{50, ip4("10.66.10.5")}, {54, ip4("10.66.10.2")}}, 0},
		{"no address", "", nil, 0},
		{"bad requested address", "", []testOpt{{50, []byte{10, 66, 10}}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log logRecorder
			resp := newDHCPServer(dhcpTestLease(), log.logf).reply(testRequest(dhcpTestMAC, dhcpRequest, tc.ciaddr, tc.opts...))
			if tc.want == 0 {
				if resp != nil {
					t.Fatalf("got a reply, want none")
				}
				return
			}
			d := decodeReply(t, resp)
			if got := d.opts[53]; !bytes.Equal(got, []byte{tc.want}) {
				t.Fatalf("message type %v, want %d", got, tc.want)
			}
			if !bytes.Equal(d.opts[54], ip4("10.66.10.1")) {
				t.Errorf("server identifier %v", d.opts[54])
			}
			switch tc.want {
			case dhcpAck:
				if !bytes.Equal(d.yiaddr, ip4("10.66.10.5")) {
					t.Errorf("yiaddr %v", d.yiaddr)
				}
				wantCI := []byte{0, 0, 0, 0}
				if tc.ciaddr != "" {
					wantCI = ip4(tc.ciaddr)
				}
				if !bytes.Equal(d.ciaddr, wantCI) {
					t.Errorf("ciaddr %v, want %v", d.ciaddr, wantCI)
				}
				if !bytes.Equal(d.opts[51], []byte{0xff, 0xff, 0xff, 0xff}) || d.opts[1] == nil || d.opts[3] == nil || d.opts[121] == nil {
					t.Errorf("ACK lacks lease time, mask, router or routes: %v", d.opts)
				}
				if log.count("DHCP ACK 10.66.10.5 to 02:66:0a:42:0a:05") != 1 {
					t.Errorf("log:\n%s", &log)
				}
			case dhcpNak:
				if !bytes.Equal(d.yiaddr, []byte{0, 0, 0, 0}) {
					t.Errorf("NAK yiaddr %v", d.yiaddr)
				}
				if msg := string(d.opts[56]); !strings.Contains(msg, "it is 10.66.10.5") {
					t.Errorf("NAK message %q does not name the VM's address", msg)
				}
				for _, code := range []byte{51, 1, 3, 121} {
					if d.opts[code] != nil {
						t.Errorf("NAK carries option %d", code)
					}
				}
				if log.count("DHCP NAK") != 1 {
					t.Errorf("log:\n%s", &log)
				}
			}
		})
	}
}

func TestReplyInform(t *testing.T) {
	d := decodeReply(t, newDHCPServer(dhcpTestLease(), nil).reply(testRequest(dhcpTestMAC, dhcpInform, "10.66.10.5")))
	if !bytes.Equal(d.opts[53], []byte{dhcpAck}) {
		t.Fatalf("message type %v, want ACK", d.opts[53])
	}
	if !bytes.Equal(d.yiaddr, []byte{0, 0, 0, 0}) || !bytes.Equal(d.ciaddr, ip4("10.66.10.5")) {
		t.Errorf("yiaddr %v ciaddr %v, want 0.0.0.0 and 10.66.10.5", d.yiaddr, d.ciaddr)
	}
	if d.opts[51] != nil {
		t.Errorf("ACK to INFORM carries a lease time")
	}
	if d.opts[1] == nil || d.opts[3] == nil || d.opts[121] == nil || d.opts[54] == nil {
		t.Errorf("ACK to INFORM lacks configuration: %v", d.opts)
	}
}

func TestReplyIgnored(t *testing.T) {
	var log logRecorder
	s := newDHCPServer(dhcpTestLease(), log.logf)
	mutate := func(f func(p []byte)) []byte {
		p := testRequest(dhcpTestMAC, dhcpDiscover, "")
		f(p)
		return p
	}
	for name, p := range map[string][]byte{
		"other MAC":        testRequest(dhcpOtherMAC, dhcpDiscover, ""),
		"other MAC again":  testRequest(dhcpOtherMAC, dhcpRequest, "", testOpt{50, ip4("10.66.10.5")}),
		"BOOTREPLY":        mutate(func(p []byte) { p[0] = 2 }),
		"not Ethernet":     mutate(func(p []byte) { p[1] = 6 }),
		"long hw address":  mutate(func(p []byte) { p[2] = 16 }),
		"BOOTP":            mutate(func(p []byte) { p[236] = 0 }),
		"decline":          testRequest(dhcpTestMAC, dhcpDecline, "", testOpt{50, ip4("10.66.10.5")}, testOpt{54, ip4("10.66.10.1")}),
		"release":          testRequest(dhcpTestMAC, dhcpRelease, "10.66.10.5", testOpt{54, ip4("10.66.10.1")}),
		"unknown type":     testRequest(dhcpTestMAC, 42, ""),
		"offer from guest": testRequest(dhcpTestMAC, dhcpOffer, ""),
	} {
		if resp := s.reply(p); resp != nil {
			t.Errorf("%s: got a reply", name)
		}
	}
	for _, c := range []struct {
		line string
		n    int
	}{
		{"ignoring requests from 02:66:0a:42:0a:06", 1}, // once, though two came
		{"DHCP DECLINE from 02:66:0a:42:0a:05: ADDRESS CONFLICT: the guest found 10.66.10.5 already in use", 1},
		{"DHCP RELEASE of 10.66.10.5", 1},
		{"not a BOOTREQUEST", 1},
		{"magic cookie", 1},
		{"type 42", 1},
	} {
		if got := log.count(c.line); got != c.n {
			t.Errorf("%d log lines with %q, want %d; log:\n%s", got, c.line, c.n, &log)
		}
	}
}

// TestReplyMalformed feeds truncated and broken messages: none may panic, and a message
// cut before its options gets no answer.
func TestReplyMalformed(t *testing.T) {
	var log logRecorder
	s := newDHCPServer(dhcpTestLease(), log.logf)
	full := testRequest(dhcpTestMAC, dhcpRequest, "", testOpt{50, ip4("10.66.10.5")}, testOpt{54, ip4("10.66.10.1")})
	for n := range len(full) {
		resp := s.reply(full[:n])
		if n < 243 && resp != nil { // 243: up to the message type
			t.Errorf("reply to the first %d bytes", n)
		}
	}
	opts := func(b ...byte) []byte {
		p := testRequest(dhcpTestMAC, dhcpDiscover, "")
		return append(p[:240], b...)
	}
	for name, p := range map[string][]byte{
		"option past end":    opts(53, 1, 1, 12, 10, 'a'),
		"length byte only":   opts(53, 1, 1, 12),
		"empty message type": opts(53, 0, 255),
		"long message type":  opts(53, 2, 1, 1, 255),
		"no message type":    opts(12, 1, 'a', 255),
		"only padding":       opts(0, 0, 0, 0),
		"nothing":            opts(),
	} {
		if resp := s.reply(p); resp != nil {
			t.Errorf("%s: got a reply", name)
		}
	}
	if got := log.count("malformed options"); got != 1 {
		t.Errorf("malformed options logged %d times, want once; log:\n%s", got, &log)
	}
	// Options split in parts (RFC 3396), a missing End and 255-byte options are accepted.
	if resp := s.reply(opts(53, 1, 1, 0, 0)); resp == nil {
		t.Errorf("no reply to a DISCOVER without End")
	}
	long := append(testRequest(dhcpTestMAC, dhcpDiscover, "", testOpt{60, make([]byte, 255)}), 0)
	if resp := s.reply(long); resp == nil {
		t.Errorf("no reply to a DISCOVER with a 255-byte option")
	}
}

func FuzzReply(f *testing.F) {
	f.Add(testRequest(dhcpTestMAC, dhcpDiscover, ""))
	f.Add(testRequest(dhcpTestMAC, dhcpRequest, "", testOpt{50, ip4("10.66.10.5")}, testOpt{54, ip4("10.66.10.1")}))
	f.Add(testRequest(dhcpTestMAC, dhcpInform, "10.66.10.5"))
	f.Add(testRequest(dhcpTestMAC, dhcpDecline, ""))
	f.Add([]byte{1, 1, 6})
	f.Add(testRequest(dhcpTestMAC, dhcpDiscover, "", testOpt{60, make([]byte, 255)}))
	s := newDHCPServer(dhcpTestLease(), nil)
	f.Fuzz(func(t *testing.T, req []byte) {
		resp := s.reply(req)
		if resp == nil {
			return
		}
		if len(resp) < 300 || len(resp) > dhcpMaxLen || resp[0] != 2 || !bytes.Equal(resp[4:8], req[4:8]) || !bytes.Equal(resp[28:44], req[28:44]) {
			t.Fatalf("bad reply % x", resp)
		}
	})
}

func TestClasslessRouteEncoding(t *testing.T) {
	via := netip.MustParseAddr("10.66.10.1")
	for _, tc := range []struct {
		dst  string
		want []byte
	}{
		{"0.0.0.0/0", []byte{0, 10, 66, 10, 1}},
		{"10.0.0.0/8", []byte{8, 10, 10, 66, 10, 1}},
		{"10.66.20.0/24", []byte{24, 10, 66, 20, 10, 66, 10, 1}},
		{"192.168.1.128/25", []byte{25, 192, 168, 1, 128, 10, 66, 10, 1}},
		{"172.16.0.0/12", []byte{12, 172, 16, 10, 66, 10, 1}},
		{"1.2.3.4/32", []byte{32, 1, 2, 3, 4, 10, 66, 10, 1}},
		{"128.0.0.0/1", []byte{1, 128, 10, 66, 10, 1}},
	} {
		if got := appendRoute(nil, netip.MustParsePrefix(tc.dst), via); !bytes.Equal(got, tc.want) {
			t.Errorf("%s via %s = %v, want %v", tc.dst, via, got, tc.want)
		}
	}
}

// TestReplyLongRoutes checks that an option 121 longer than 255 bytes is split (RFC 3396)
// and that Validate refuses a lease whose reply would not fit in 548 bytes.
func TestReplyLongRoutes(t *testing.T) {
	l := dhcpTestLease()
	l.Hostname, l.MTU, l.DNS = "", 0, nil
	l.Routes = nil
	want := []byte{0, 10, 66, 10, 1}
	for i := range 32 { // 5 + 32*8 = 261 bytes of option 121
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i), 0}), 24)
		l.Routes = append(l.Routes, Route{Dst: dst, Via: l.Gateway})
		want = append(want, 24, 10, 100, byte(i), 10, 66, 10, 1)
	}
	if err := l.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	resp := newDHCPServer(l, nil).reply(testRequest(dhcpTestMAC, dhcpDiscover, ""))
	if n := bytes.Count(resp, []byte{121, 255}); n != 1 {
		t.Errorf("%d full-length option 121 parts, want 1", n)
	}
	if d := decodeReply(t, resp); !bytes.Equal(d.opts[121], want) {
		t.Errorf("option 121 = %v, want %v", d.opts[121], want)
	}
	l.Routes = append(l.Routes, l.Routes...)
	if err := l.Validate(); err == nil || !strings.Contains(err.Error(), "fewer routes") {
		t.Errorf("Validate with 64 routes = %v, want a size error", err)
	}
}

func TestLeaseValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(l *Lease)
		want string // "" for valid
	}{
		{"valid", func(l *Lease) {}, ""},
		{"minimal", func(l *Lease) { l.Routes, l.Hostname, l.MTU, l.DNS = nil, "", 0, nil }, ""},
		{"fqdn hostname", func(l *Lease) { l.Hostname = "vm-a.default.vm.cluster.local" }, ""},
		{"/30", func(l *Lease) {
			l.Address, l.Gateway, l.Routes = netip.MustParsePrefix("10.66.10.5/30"), netip.MustParseAddr("10.66.10.6"), nil
		}, ""},
		{"no MAC", func(l *Lease) { l.MAC = nil }, "6-byte"},
		{"long MAC", func(l *Lease) { l.MAC = append(net.HardwareAddr{}, 1, 2, 3, 4, 5, 6, 7, 8) }, "6-byte"},
		{"multicast MAC", func(l *Lease) { l.MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }, "multicast"},
		{"no address", func(l *Lease) { l.Address = netip.Prefix{} }, "not an IPv4 address"},
		{"IPv6", func(l *Lease) { l.Address = netip.MustParsePrefix("fd00::5/64") }, "not an IPv4 address"},
		{"IPv4-mapped", func(l *Lease) { l.Address = netip.MustParsePrefix("::ffff:10.66.10.5/120") }, "not an IPv4 address"},
		{"/32", func(l *Lease) { l.Address = netip.MustParsePrefix("10.66.10.5/32") }, "prefix length must be 1 to 30"},
		{"/31", func(l *Lease) { l.Address = netip.MustParsePrefix("10.66.10.5/31") }, "prefix length must be 1 to 30"},
		{"/0", func(l *Lease) { l.Address = netip.MustParsePrefix("10.66.10.5/0") }, "prefix length must be 1 to 30"},
		{"network address", func(l *Lease) { l.Address = netip.MustParsePrefix("10.66.10.0/24") }, "network or broadcast"},
		{"broadcast address", func(l *Lease) { l.Address = netip.MustParsePrefix("10.66.10.255/24") }, "network or broadcast"},
		{"no gateway", func(l *Lease) { l.Gateway = netip.Addr{} }, "gateway invalid IP must be"},
		{"gateway outside", func(l *Lease) { l.Gateway = netip.MustParseAddr("10.66.11.1") }, "gateway 10.66.11.1 must be an IPv4 address of 10.66.10.0/24"},
		{"gateway is the VM", func(l *Lease) { l.Gateway = netip.MustParseAddr("10.66.10.5") }, "other than the VM's"},
		{"gateway IPv6", func(l *Lease) { l.Gateway = netip.MustParseAddr("fe80::1") }, "gateway fe80::1"},
		{"gateway broadcast", func(l *Lease) { l.Gateway = netip.MustParseAddr("10.66.10.255") }, "gateway 10.66.10.255 must be"},
		{"gateway network", func(l *Lease) { l.Gateway = netip.MustParseAddr("10.66.10.0") }, "gateway 10.66.10.0 must be"},
		{"MTU too small", func(l *Lease) { l.MTU = 60 }, "MTU 60"},
		{"MTU too big", func(l *Lease) { l.MTU = 70000 }, "MTU 70000"},
		{"hostname with space", func(l *Lease) { l.Hostname = "my vm" }, "not a DNS name"},
		{"hostname empty label", func(l *Lease) { l.Hostname = "a..b" }, "not a DNS name"},
		{"hostname long label", func(l *Lease) { l.Hostname = strings.Repeat("a", 64) }, "not a DNS name"},
		{"route IPv6", func(l *Lease) { l.Routes[0].Dst = netip.MustParsePrefix("fd00::/8") }, "not an IPv4 prefix"},
		{"route host bits", func(l *Lease) { l.Routes[0].Dst = netip.MustParsePrefix("10.66.20.1/24") }, "did you mean 10.66.20.0/24"},
		{"route default", func(l *Lease) { l.Routes[0].Dst = netip.MustParsePrefix("0.0.0.0/0") }, "default route"},
		{"route via outside", func(l *Lease) { l.Routes[0].Via = netip.MustParseAddr("192.168.0.1") }, "next hop 192.168.0.1"},
		{"route via VM", func(l *Lease) { l.Routes[0].Via = netip.MustParseAddr("10.66.10.5") }, "next hop 10.66.10.5"},
		{"DNS IPv6", func(l *Lease) { l.DNS = append(l.DNS, netip.MustParseAddr("fd00::53")) }, `DNS server "fd00::53"`},
		{"DNS unset", func(l *Lease) { l.DNS = []netip.Addr{{}} }, "DNS server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := dhcpTestLease()
			tc.edit(&l)
			err := l.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestServeDHCPErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bad := dhcpTestLease()
	bad.Gateway = netip.MustParseAddr("10.66.10.5")
	if err := ServeDHCP(ctx, "lo", bad, nil); err == nil || !strings.Contains(err.Error(), "gateway") {
		t.Errorf("ServeDHCP with an invalid lease = %v", err)
	}
	err := ServeDHCP(ctx, "ferrynosuchif0", dhcpTestLease(), nil)
	if err == nil || !strings.Contains(err.Error(), "binding DHCP to interface ferrynosuchif0: ") {
		t.Errorf("ServeDHCP on a missing interface = %v", err)
	}
}

// TestServeDHCPBusybox runs the server on one end of a veth pair, with no address, and
// busybox's udhcpc on the other end, in a network namespace of its own.
func TestServeDHCPBusybox(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and a veth pair")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox for its udhcpc client")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("needs ip (iproute2) to set up the network namespace")
	}
	pid := os.Getpid()
	ns := fmt.Sprintf("ferry-dhcptest-%d", pid)
	srvIf, cliIf := fmt.Sprintf("fdhs%d", pid), fmt.Sprintf("fdhc%d", pid)
	ipCmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	_ = exec.Command("ip", "netns", "del", ns).Run() // a leftover of a killed run with our pid
	ipCmd("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ipCmd("link", "add", srvIf, "type", "veth", "peer", "name", cliIf, "netns", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", srvIf).Run() })
	ipCmd("-n", ns, "link", "set", cliIf, "address", dhcpTestMAC.String())
	ipCmd("-n", ns, "link", "set", cliIf, "up")
	ipCmd("link", "set", srvIf, "up")

	l := dhcpTestLease()
	l.Routes = l.Routes[:1]
	l.Hostname, l.MTU = "vm-dhcptest", 1400
	var log logRecorder
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeDHCP(ctx, srvIf, l, log.logf) }()
	t.Cleanup(func() { // runs before the links go
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServeDHCP = %v, want nil once ctx ends", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("ServeDHCP did not return within 5s of ctx ending")
		}
	})

	// A second server in the same namespace, bound to another interface, must coexist.
	other := make(chan error, 1)
	go func() { other <- ServeDHCP(ctx, "lo", dhcpTestLease(), nil) }()
	t.Cleanup(func() { // runs before the first server's cleanup: ctx is still live
		select {
		case err := <-other:
			t.Errorf("the second server, on lo, stopped early: %v", err)
		default:
		}
	})

	dir := t.TempDir()
	script := filepath.Join(dir, "udhcpc.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
{
	echo "event=$1"
	for v in ip subnet mask router staticroutes hostname mtu dns lease serverid; do
		eval "echo \"$v=\$$v\""
	done
} >>"$FERRY_DHCPTEST_OUT"
`), 0o755); err != nil {
		t.Fatal(err)
	}
	// udhcpc runs the client and returns the variables of its last "bound" event (nil
	// for none) and its output.
	udhcpc := func(tries string) (map[string]string, string, error) {
		out := filepath.Join(dir, fmt.Sprintf("events-%d", time.Now().UnixNano()))
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		cmd := exec.CommandContext(cctx, "ip", "netns", "exec", ns, busybox, "udhcpc",
			"-i", cliIf, "-n", "-q", "-f", "-t", tries, "-T", "1", "-s", script)
		cmd.Env = append(os.Environ(), "FERRY_DHCPTEST_OUT="+out)
		output, err := cmd.CombinedOutput()
		events, rerr := os.ReadFile(out)
		if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			t.Fatal(rerr)
		}
		var bound map[string]string
		for _, line := range strings.Split(string(events), "\n") {
			k, v, _ := strings.Cut(line, "=")
			switch {
			case k == "event" && v == "bound":
				bound = map[string]string{}
			case k == "event":
				bound = nil
			case bound != nil && k != "":
				bound[k] = v
			}
		}
		return bound, fmt.Sprintf("%s\nevents:\n%s", output, events), err
	}
	serverState := func() string {
		select {
		case err := <-done:
			done <- err
			return fmt.Sprintf("ServeDHCP returned %v; log:\n%s", err, &log)
		default:
			return fmt.Sprintf("server log:\n%s", &log)
		}
	}

	bound, output, err := udhcpc("5")
	if err != nil || bound == nil {
		t.Fatalf("udhcpc got no lease (%v):\n%s\n%s", err, output, serverState())
	}
	for k, want := range map[string]string{
		"ip":           "10.66.10.5",
		"subnet":       "255.255.255.0",
		"mask":         "24",
		"router":       "10.66.10.1",
		"staticroutes": "0.0.0.0/0 10.66.10.1 10.66.20.0/24 10.66.10.254",
		"hostname":     "vm-dhcptest",
		"mtu":          "1400",
		"dns":          "10.96.0.10 1.1.1.1",
		"lease":        "4294967295",
		"serverid":     "10.66.10.1",
	} {
		if got := strings.TrimSpace(bound[k]); got != want {
			t.Errorf("udhcpc's %s = %q, want %q", k, got, want)
		}
	}
	for _, line := range []string{"DHCP OFFER 10.66.10.5 to " + dhcpTestMAC.String(), "DHCP ACK 10.66.10.5 to " + dhcpTestMAC.String()} {
		if log.count(line) == 0 {
			t.Errorf("no log line %q; %s", line, serverState())
		}
	}

	// Another NIC on the link gets nothing.
	ipCmd("-n", ns, "link", "set", cliIf, "address", dhcpOtherMAC.String())
	bound, output, err = udhcpc("2")
	if err == nil || bound != nil {
		t.Errorf("udhcpc from %s got a lease (exit %v):\n%s", dhcpOtherMAC, err, output)
	}
	deadline := time.Now().Add(5 * time.Second)
	for log.count("ignoring requests from "+dhcpOtherMAC.String()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // poll: the server's log has no event to wait on
	}
	if n := log.count("ignoring requests from " + dhcpOtherMAC.String()); n != 1 {
		t.Errorf("%d log lines about %s, want 1; %s", n, dhcpOtherMAC, serverState())
	}
}
