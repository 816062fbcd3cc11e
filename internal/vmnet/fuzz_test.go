package vmnet

// Fuzz targets for what a guest sends the DHCP server (a guest is its tenant's, and may
// send anything), and for the leases the server encodes. FuzzReply (dhcp_test.go) checks
// the shape of any reply; these check what the replies say.

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

// FuzzParseOptions checks the option parser on arbitrary bytes: no panic, nothing read
// past the input, and options written by appendOption read back as written.
func FuzzParseOptions(f *testing.F) {
	f.Add([]byte{53, 1, 1, 55, 4, 1, 3, 6, 121, 255})
	f.Add([]byte{0, 0, 53, 1, 3, 50, 4, 10, 66, 10, 5})      // pads, no End
	f.Add([]byte{53, 5, 1})                                  // runs past the end
	f.Add([]byte{121, 2, 0, 1, 121, 3, 10, 66, 10, 255, 54}) // split option, junk after End
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		opts, ok := parseOptions(b)
		if !ok {
			if opts != nil {
				t.Fatalf("parseOptions(% x) failed but returned options", b)
			}
		} else {
			n := 0
			for code, data := range opts {
				if code == optPad || code == optEnd {
					t.Fatalf("parseOptions(% x) returned option %d", b, code)
				}
				n += len(data)
			}
			if n > len(b) {
				t.Fatalf("parseOptions(% x) returned %d bytes of options from %d bytes", b, n, len(b))
			}
		}

		// Round trip: the input read as a list of (code, data) pairs, written and read back.
		want := map[byte][]byte{}
		var enc []byte
		for rest := b; len(rest) >= 2; {
			code, n := rest[0], int(rest[1])
			rest = rest[2:]
			data := rest[:min(n, len(rest))]
			rest = rest[len(data):]
			if code == optPad || code == optEnd {
				continue
			}
			// Long data: appendOption splits it into parts of 255 bytes (RFC 3396).
			data = bytes.Repeat(data, 1+n/16)
			enc = appendOption(enc, code, data...)
			want[code] = append(want[code], data...)
		}
		got, ok := parseOptions(append(enc, optEnd))
		if !ok || len(got) != len(want) {
			t.Fatalf("options % x read back as %v (ok %v), want %v", enc, got, ok, want)
		}
		for code, data := range want {
			if !bytes.Equal(got[code], data) {
				t.Fatalf("option %d read back as % x, want % x", code, got[code], data)
			}
		}
	})
}

// FuzzReplySemantics sends arbitrary requests to a server and checks what it answers: only
// the lease's MAC is answered, an OFFER or ACK gives the lease's address and nothing else, a
// NAK gives none, and a REQUEST is acknowledged only for the lease's own address.
func FuzzReplySemantics(f *testing.F) {
	l := dhcpTestLease()
	f.Add(testRequest(dhcpTestMAC, dhcpDiscover, ""))
	f.Add(testRequest(dhcpTestMAC, dhcpRequest, "", testOpt{50, ip4("10.66.10.5")}, testOpt{54, ip4("10.66.10.1")}))
	f.Add(testRequest(dhcpTestMAC, dhcpRequest, "", testOpt{50, ip4("10.66.10.6")}))
	f.Add(testRequest(dhcpTestMAC, dhcpRequest, "10.66.10.5"))
	f.Add(testRequest(dhcpTestMAC, dhcpRequest, "10.66.10.5", testOpt{50, ip4("10.66.10.5")[:3]}))
	f.Add(testRequest(dhcpTestMAC, dhcpRequest, "", testOpt{54, ip4("10.66.10.9")}))
	f.Add(testRequest(dhcpTestMAC, dhcpInform, "10.66.10.5"))
	f.Add(testRequest(dhcpTestMAC, dhcpRelease, "10.66.10.5"))
	f.Add(testRequest(dhcpTestMAC, 42, ""))
	f.Add(testRequest(dhcpOtherMAC, dhcpDiscover, ""))
	f.Add(append(testRequest(dhcpTestMAC, dhcpDiscover, ""), 53, 1, 3)) // a second type after End
	s := newDHCPServer(l, nil)
	addr := l.Address.Addr().AsSlice()
	f.Fuzz(func(t *testing.T, req []byte) {
		resp := s.reply(req)
		if len(s.noted) > 64 {
			t.Fatalf("the server noted %d things to log once, more than its bound of 64", len(s.noted))
		}
		if resp == nil {
			return
		}
		if len(req) < dhcpOptionsAt || req[0] != bootRequest || !bytes.Equal(req[28:34], l.MAC) {
			t.Fatalf("answered a request that is not a BOOTREQUEST from %s: % x", l.MAC, req)
		}
		reqOpts, ok := parseOptions(req[dhcpOptionsAt:])
		if !ok {
			t.Fatalf("answered a request with malformed options: % x", req)
		}
		opts, ok := parseOptions(resp[dhcpOptionsAt:])
		if !ok || len(opts[optMessageType]) != 1 {
			t.Fatalf("reply options malformed: % x", resp[dhcpOptionsAt:])
		}
		yiaddr := resp[16:20]
		switch typ := opts[optMessageType][0]; typ {
		case dhcpOffer:
			if reqOpts[optMessageType][0] != dhcpDiscover || !bytes.Equal(yiaddr, addr) {
				t.Fatalf("OFFER of % x to a message of type %d", yiaddr, reqOpts[optMessageType][0])
			}
		case dhcpAck:
			switch reqOpts[optMessageType][0] {
			case dhcpRequest:
				want := req[12:16]
				if r, ok := reqOpts[optRequestedIP]; ok {
					want = r
				}
				if !bytes.Equal(want, addr) || !bytes.Equal(yiaddr, addr) {
					t.Fatalf("ACK of % x to a REQUEST for % x", yiaddr, want)
				}
			case dhcpInform:
				if !bytes.Equal(yiaddr, []byte{0, 0, 0, 0}) {
					t.Fatalf("ACK to an INFORM gives address % x", yiaddr)
				}
			default:
				t.Fatalf("ACK to a message of type %d", reqOpts[optMessageType][0])
			}
		case dhcpNak:
			if reqOpts[optMessageType][0] != dhcpRequest || !bytes.Equal(yiaddr, []byte{0, 0, 0, 0}) {
				t.Fatalf("NAK with address % x to a message of type %d", yiaddr, reqOpts[optMessageType][0])
			}
		default:
			t.Fatalf("reply of message type %d", typ)
		}
	})
}

// FuzzLeaseOptions builds leases from arbitrary fields: a lease that Validate accepts must
// give an OFFER that fits in 548 bytes and says, decoded independently of the encoder,
// what the lease says.
func FuzzLeaseOptions(f *testing.F) {
	add := func(l Lease) {
		var routes, dns []byte
		for _, r := range l.Routes {
			d, v := r.Dst.Addr().As4(), r.Via.As4()
			routes = append(append(append(routes, d[:]...), byte(r.Dst.Bits())), v[:]...)
		}
		for _, d := range l.DNS {
			dns = append(dns, d.AsSlice()...)
		}
		f.Add([]byte(l.MAC), l.Address.String(), l.Gateway.String(), routes, l.Hostname, l.MTU, dns)
	}
	add(dhcpTestLease())
	l := dhcpTestLease()
	l.Routes, l.DNS, l.Hostname, l.MTU = nil, nil, "", 0
	add(l)
	l.Address, l.Gateway = netip.MustParsePrefix("192.168.0.2/30"), netip.MustParseAddr("192.168.0.1")
	add(l)
	l.Hostname = "a.b-c.example"
	l.MTU = 68
	add(l)
	f.Add([]byte{3, 0, 0, 0, 0, 1}, "10.0.0.0/8", "10.0.0.1", []byte{}, "x_y", 0, []byte{1})

	f.Fuzz(func(t *testing.T, mac []byte, address, gateway string, routes []byte, hostname string, mtu int, dns []byte) {
		l := Lease{MAC: net.HardwareAddr(mac), Hostname: hostname, MTU: mtu}
		var err error
		if l.Address, err = netip.ParsePrefix(address); err != nil {
			return
		}
		if l.Gateway, err = netip.ParseAddr(gateway); err != nil {
			return
		}
		for ; len(routes) >= 9; routes = routes[9:] {
			dst := netip.PrefixFrom(netip.AddrFrom4([4]byte(routes[:4])), int(routes[4]))
			l.Routes = append(l.Routes, Route{Dst: dst, Via: netip.AddrFrom4([4]byte(routes[5:9]))})
		}
		for ; len(dns) >= 4; dns = dns[4:] {
			l.DNS = append(l.DNS, netip.AddrFrom4([4]byte(dns[:4])))
		}
		if l.Validate() != nil {
			return
		}
		resp := newDHCPServer(l, nil).reply(discoverFrom(l.MAC))
		if len(resp) < bootpMinLen || len(resp) > dhcpMaxLen {
			t.Fatalf("OFFER for a valid lease %+v is %d bytes", l, len(resp))
		}
		opts, ok := parseOptions(resp[dhcpOptionsAt:])
		if !ok {
			t.Fatalf("OFFER options malformed: % x", resp[dhcpOptionsAt:])
		}
		gw := l.Gateway.AsSlice()
		if !bytes.Equal(resp[16:20], l.Address.Addr().AsSlice()) || !bytes.Equal(opts[optRouter], gw) || !bytes.Equal(opts[optServerID], gw) {
			t.Fatalf("OFFER gives address % x, router % x, server % x for lease %+v", resp[16:20], opts[optRouter], opts[optServerID], l)
		}
		if mask := opts[optSubnetMask]; len(mask) != 4 || maskBits(mask) != l.Address.Bits() {
			t.Fatalf("subnet mask % x for a /%d", mask, l.Address.Bits())
		}
		if string(opts[optHostname]) != l.Hostname {
			t.Fatalf("hostname %q, want %q", opts[optHostname], l.Hostname)
		}
		if m, ok := opts[optMTU]; ok != (l.MTU != 0) || ok && (len(m) != 2 || int(binary.BigEndian.Uint16(m)) != l.MTU) {
			t.Fatalf("MTU option % x for MTU %d", m, l.MTU)
		}
		var wantDNS []byte
		for _, d := range l.DNS {
			wantDNS = append(wantDNS, d.AsSlice()...)
		}
		if !bytes.Equal(opts[optDNS], wantDNS) {
			t.Fatalf("DNS option % x, want % x", opts[optDNS], wantDNS)
		}
		got, ok := readClasslessRoutes(opts[optClasslessRoutes])
		want := append([]Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: l.Gateway}}, l.Routes...)
		if !ok || len(got) != len(want) {
			t.Fatalf("option 121 % x reads as %v (ok %v), want %v", opts[optClasslessRoutes], got, ok, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("route %d reads as %v, want %v", i, got[i], want[i])
			}
		}
	})
}

// discoverFrom is a minimal DHCPDISCOVER from mac.
func discoverFrom(mac net.HardwareAddr) []byte {
	p := make([]byte, dhcpOptionsAt)
	p[0], p[1], p[2] = bootRequest, 1, 6
	copy(p[28:], mac)
	copy(p[dhcpCookieAt:], dhcpCookie)
	return append(p, optMessageType, 1, dhcpDiscover, optEnd)
}

// maskBits counts the leading ones of a netmask, or returns -1 when it is not contiguous.
func maskBits(m []byte) int {
	v := binary.BigEndian.Uint32(m)
	n := 0
	for v&(1<<31) != 0 {
		v <<= 1
		n++
	}
	if v != 0 {
		return -1
	}
	return n
}

// readClasslessRoutes decodes option 121 as a client does (RFC 3442).
func readClasslessRoutes(b []byte) (routes []Route, ok bool) {
	for len(b) > 0 {
		bits := int(b[0])
		n := (bits + 7) / 8
		if bits > 32 || len(b) < 1+n+4 {
			return nil, false
		}
		var dst [4]byte
		copy(dst[:], b[1:1+n])
		routes = append(routes, Route{Dst: netip.PrefixFrom(netip.AddrFrom4(dst), bits), Via: netip.AddrFrom4([4]byte(b[1+n : 1+n+4]))})
		b = b[1+n+4:]
	}
	return routes, true
}
