package vmnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Route is one classless static route (RFC 3442, option 121) handed to the guest.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// Lease is what the server hands the one guest on its link.
type Lease struct {
	MAC      net.HardwareAddr // the guest NIC's address; requests from other MACs are ignored (logged once)
	Address  netip.Prefix     // the guest's address and prefix length, e.g. 10.66.10.5/24
	Gateway  netip.Addr       // router (option 3), first route of option 121 (0.0.0.0/0 via Gateway), and server identifier (option 54)
	Routes   []Route          // more classless static routes, after the default one
	Hostname string           // option 12 ("" omits)
	MTU      int              // option 26 (0 omits)
	DNS      []netip.Addr     // option 6 (empty omits)
}

// Message types (option 53) and option codes, RFC 2132.
const (
	dhcpDiscover = 1
	dhcpOffer    = 2
	dhcpRequest  = 3
	dhcpDecline  = 4
	dhcpAck      = 5
	dhcpNak      = 6
	dhcpRelease  = 7
	dhcpInform   = 8

	optPad             = 0
	optSubnetMask      = 1
	optRouter          = 3
	optDNS             = 6
	optHostname        = 12
	optMTU             = 26
	optRequestedIP     = 50
	optLeaseTime       = 51
	optMessageType     = 53
	optServerID        = 54
	optMessage         = 56
	optClasslessRoutes = 121
	optEnd             = 255
)

// Layout of a DHCP message (RFC 2131, figure 1).
const (
	bootRequest   = 1
	bootReply     = 2
	dhcpCookieAt  = 236              // after op ... file
	dhcpOptionsAt = dhcpCookieAt + 4 // after the magic cookie
	bootpMinLen   = 300              // the BOOTP message size old clients expect (RFC 1542)
	dhcpMaxLen    = 548              // what every client takes: a 576-byte datagram less IP and UDP headers
)

var dhcpCookie = []byte{99, 130, 83, 99}

// Validate says what is wrong with a lease (IPv4 only, gateway inside Address's prefix and
// not equal to the address, MAC 6 bytes, prefix length 1..30...), with messages a user can act on.
func (l Lease) Validate() error {
	addr, subnet := l.Address.Addr(), l.Address.Masked()
	switch {
	case len(l.MAC) != 6:
		return fmt.Errorf("DHCP lease: MAC %q is not a 6-byte Ethernet address", l.MAC.String())
	case l.MAC[0]&1 != 0:
		return fmt.Errorf("DHCP lease: MAC %s is a multicast address; a NIC needs a unicast one (even first byte)", l.MAC)
	case !l.Address.IsValid() || !addr.Is4():
		return fmt.Errorf("DHCP lease: address %q is not an IPv4 address with a prefix length (such as 10.66.10.5/24)", l.Address.String())
	case l.Address.Bits() < 1 || l.Address.Bits() > 30:
		return fmt.Errorf("DHCP lease: address %s: the prefix length must be 1 to 30", l.Address)
	case addr == subnet.Addr() || addr == lastAddr4(subnet):
		return fmt.Errorf("DHCP lease: address %s is the network or broadcast address of %s", addr, subnet)
	case !l.Gateway.Is4() || !subnet.Contains(l.Gateway) || l.Gateway == addr || l.Gateway == subnet.Addr() || l.Gateway == lastAddr4(subnet):
		return fmt.Errorf("DHCP lease: gateway %s must be an IPv4 address of %s other than the VM's and the network and broadcast addresses", l.Gateway, subnet)
	case l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535):
		return fmt.Errorf("DHCP lease: MTU %d must be 68 to 65535 (or 0 to leave it to the guest)", l.MTU)
	case !validHostname(l.Hostname):
		return fmt.Errorf("DHCP lease: hostname %q is not a DNS name (letters, digits and '-' in labels of 1 to 63 characters joined by '.', 253 in all)", l.Hostname)
	}
	for _, r := range l.Routes {
		switch {
		case !r.Dst.IsValid() || !r.Dst.Addr().Is4():
			return fmt.Errorf("DHCP lease: route destination %q is not an IPv4 prefix", r.Dst.String())
		case r.Dst != r.Dst.Masked():
			return fmt.Errorf("DHCP lease: route destination %s has bits set past its prefix length; did you mean %s?", r.Dst, r.Dst.Masked())
		case r.Dst.Bits() == 0:
			return fmt.Errorf("DHCP lease: route %s: the default route is always the one via the gateway; give only more specific routes", r.Dst)
		case !r.Via.Is4() || !subnet.Contains(r.Via) || r.Via == addr:
			return fmt.Errorf("DHCP lease: route to %s: next hop %s must be an IPv4 address of %s other than the VM's", r.Dst, r.Via, subnet)
		}
	}
	for _, d := range l.DNS {
		if !d.Is4() {
			return fmt.Errorf("DHCP lease: DNS server %q is not an IPv4 address", d.String())
		}
	}
	if n := dhcpOptionsAt + len(l.options(dhcpAck, true)); n > dhcpMaxLen {
		return fmt.Errorf("DHCP lease: the reply would take %d bytes, more than the %d every client accepts; give fewer routes or DNS servers, or a shorter hostname", n, dhcpMaxLen)
	}
	return nil
}

// validHostname tells whether h is empty or a DNS name that clients will accept.
func validHostname(h string) bool {
	if h == "" {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) < 1 || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// lastAddr4 is the broadcast address of the IPv4 prefix p.
func lastAddr4(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, v)))
}

// options are the options of an OFFER or ACK (typ), up to and including End; withLease
// adds the lease time, which the ACK of an INFORM leaves out.
func (l Lease) options(typ byte, withLease bool) []byte {
	gw := l.Gateway.As4()
	b := appendOption(nil, optMessageType, typ)
	b = appendOption(b, optServerID, gw[:]...)
	if withLease {
		b = appendOption(b, optLeaseTime, 0xff, 0xff, 0xff, 0xff) // infinite
	}
	b = appendOption(b, optSubnetMask, net.CIDRMask(l.Address.Bits(), 32)...)
	b = appendOption(b, optRouter, gw[:]...)
	routes := appendRoute(nil, netip.PrefixFrom(netip.IPv4Unspecified(), 0), l.Gateway)
	for _, r := range l.Routes {
		routes = appendRoute(routes, r.Dst, r.Via)
	}
	b = appendOption(b, optClasslessRoutes, routes...)
	if l.Hostname != "" {
		b = appendOption(b, optHostname, []byte(l.Hostname)...)
	}
	if l.MTU != 0 {
		b = appendOption(b, optMTU, byte(l.MTU>>8), byte(l.MTU))
	}
	if len(l.DNS) > 0 {
		var dns []byte
		for _, d := range l.DNS {
			dns = append(dns, d.AsSlice()...)
		}
		b = appendOption(b, optDNS, dns...)
	}
	return append(b, optEnd)
}

// appendOption appends option code with data, split into several options of at most 255
// bytes when longer (RFC 3396: the client concatenates them).
func appendOption(b []byte, code byte, data ...byte) []byte {
	for {
		n := min(len(data), 255)
		b = append(append(b, code, byte(n)), data[:n]...)
		if data = data[n:]; len(data) == 0 {
			return b
		}
	}
}

// appendRoute appends one route in RFC 3442's encoding: the prefix length, the
// significant octets of the destination, and the router.
func appendRoute(b []byte, dst netip.Prefix, via netip.Addr) []byte {
	d, v := dst.Masked().Addr().As4(), via.As4()
	b = append(b, byte(dst.Bits()))
	b = append(b, d[:(dst.Bits()+7)/8]...)
	return append(b, v[:]...)
}

// parseOptions reads the options field up to End. An option given more than once is the
// concatenation of its parts (RFC 3396); ok is false when an option runs past the end.
// A missing End is forgiven.
func parseOptions(b []byte) (opts map[byte][]byte, ok bool) {
	opts = map[byte][]byte{}
	for len(b) > 0 {
		switch b[0] {
		case optPad:
			b = b[1:]
			continue
		case optEnd:
			return opts, true
		}
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			return nil, false
		}
		opts[b[0]] = append(opts[b[0]], b[2:2+int(b[1])]...)
		b = b[2+int(b[1]):]
	}
	return opts, true
}

// dhcpServer answers one guest's DHCP for a lease. reply holds all of its logic; it is
// not safe for concurrent use.
type dhcpServer struct {
	lease Lease
	logf  func(format string, args ...any)
	noted map[string]bool // what was logged once
}

func newDHCPServer(l Lease, logf func(format string, args ...any)) *dhcpServer {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &dhcpServer{lease: l, logf: logf, noted: map[string]bool{}}
}

// once logs a line the first time key is seen, for what a sender could repeat forever.
// It stops noting new keys after a while, so a flood of MACs cannot grow it.
func (s *dhcpServer) once(key, format string, args ...any) {
	if s.noted[key] || len(s.noted) >= 64 {
		return
	}
	s.noted[key] = true
	s.logf(format, args...)
}

// reply is the answer to the DHCP message req, or nil when none is due.
func (s *dhcpServer) reply(req []byte) []byte {
	switch {
	case len(req) < dhcpOptionsAt:
		s.once("short", "DHCP: ignoring a %d-byte packet, too short for a DHCP message", len(req))
		return nil
	case req[0] != bootRequest:
		s.once("op", "DHCP: ignoring a message that is not a BOOTREQUEST (op %d)", req[0])
		return nil
	case req[1] != 1 || req[2] != 6:
		s.once("htype", "DHCP: ignoring a request with hardware type %d and address length %d; only Ethernet is served", req[1], req[2])
		return nil
	case !bytes.Equal(req[dhcpCookieAt:dhcpOptionsAt], dhcpCookie):
		s.once("cookie", "DHCP: ignoring a BOOTP request without the DHCP magic cookie")
		return nil
	}
	l := s.lease
	mac := net.HardwareAddr(req[28:34])
	if !bytes.Equal(mac, l.MAC) {
		s.once("mac "+mac.String(), "DHCP: ignoring requests from %s: only %s, the VM's NIC, is served on this link", mac, l.MAC)
		return nil
	}
	opts, ok := parseOptions(req[dhcpOptionsAt:])
	if !ok || len(opts[optMessageType]) != 1 {
		s.once("options", "DHCP: ignoring a request from %s with malformed options or no message type", mac)
		return nil
	}
	addr := l.Address.Addr().As4()
	ciaddr := req[12:16]
	switch typ := opts[optMessageType][0]; typ {
	case dhcpDiscover:
		s.logf("DHCP OFFER %s to %s", l.Address.Addr(), mac)
		return buildReply(req, nil, addr[:], l.options(dhcpOffer, true))
	case dhcpRequest:
		gw := l.Gateway.As4()
		if id, ok := opts[optServerID]; ok && !bytes.Equal(id, gw[:]) {
			s.logf("DHCP: ignoring a REQUEST from %s for server %s (this one is %s)", mac, showAddr(id), l.Gateway)
			return nil
		}
		want := ciaddr
		if r, ok := opts[optRequestedIP]; ok {
			want = r
		}
		if len(want) != 4 || bytes.Equal(want, []byte{0, 0, 0, 0}) {
			s.once("request", "DHCP: ignoring a REQUEST from %s that names no valid address", mac)
			return nil
		}
		if !bytes.Equal(want, addr[:]) {
			msg := fmt.Sprintf("%s is not this VM's address; it is %s", showAddr(want), l.Address.Addr())
			s.logf("DHCP NAK to %s: %s", mac, msg)
			nak := appendOption(nil, optMessageType, dhcpNak)
			nak = appendOption(nak, optServerID, gw[:]...)
			nak = append(appendOption(nak, optMessage, []byte(msg)...), optEnd)
			return buildReply(req, nil, nil, nak)
		}
		s.logf("DHCP ACK %s to %s", l.Address.Addr(), mac)
		return buildReply(req, ciaddr, addr[:], l.options(dhcpAck, true))
	case dhcpInform:
		s.logf("DHCP ACK (INFORM, no address) to %s at %s", mac, showAddr(ciaddr))
		return buildReply(req, ciaddr, nil, l.options(dhcpAck, false))
	case dhcpDecline:
		s.logf("DHCP DECLINE from %s: ADDRESS CONFLICT: the guest found %s already in use on its link; another station answers for the VM's address",
			mac, showAddr(opts[optRequestedIP]))
	case dhcpRelease:
		s.logf("DHCP RELEASE of %s from %s (it stays the VM's)", showAddr(ciaddr), mac)
	default:
		s.once(fmt.Sprint("type ", typ), "DHCP: ignoring a message of type %d from %s", typ, mac)
	}
	return nil
}

// showAddr prints a 4-byte address from a packet, and anything else as "?".
func showAddr(b []byte) string {
	if len(b) != 4 {
		return "?"
	}
	return netip.AddrFrom4([4]byte(b)).String()
}

// buildReply is a BOOTREPLY to req with its xid, flags, giaddr and chaddr, the given
// ciaddr and yiaddr (nil for 0.0.0.0) and options, padded to the BOOTP minimum.
func buildReply(req, ciaddr, yiaddr, opts []byte) []byte {
	p := make([]byte, dhcpOptionsAt, max(bootpMinLen, dhcpOptionsAt+len(opts)))
	p[0], p[1], p[2] = bootReply, 1, 6
	copy(p[4:8], req[4:8])     // xid
	copy(p[10:12], req[10:12]) // flags
	copy(p[12:16], ciaddr)
	copy(p[16:20], yiaddr)
	copy(p[24:44], req[24:44]) // giaddr, chaddr
	copy(p[dhcpCookieAt:], dhcpCookie)
	p = append(p, opts...)
	for len(p) < bootpMinLen {
		p = append(p, optPad)
	}
	return p
}

// ServeDHCP answers DHCP for l on the network interface ifname until ctx ends; it returns
// nil when ctx ends and an error when the socket cannot be opened (e.g. "binding DHCP to
// interface X: ..."). logf (may be nil) gets one line per exchange, e.g. "DHCP ACK
// 10.66.10.5 to 02:...".
//
// The socket is bound to ifname, so one server per tap can run in a network namespace,
// and the interface needs no address. Replies are broadcast: the guest is the only
// station on the link, and it has no address to unicast to before its ACK.
func ServeDHCP(ctx context.Context, ifname string, l Lease, logf func(format string, args ...any)) error {
	if err := l.Validate(); err != nil {
		return err
	}
	conn, err := listenDHCP(ctx, ifname)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // wakes ReadFrom
	defer stop()

	s := newDHCPServer(l, logf)
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading DHCP requests on %s: %w", ifname, err)
		}
		if resp := s.reply(buf[:n]); resp != nil {
			if _, err := conn.WriteTo(resp, dst); err != nil {
				s.logf("DHCP: sending the reply on %s: %v", ifname, err)
			}
		}
	}
}

// listenDHCP opens the server's UDP socket on 0.0.0.0:67, bound to ifname before bind(2)
// so that servers on other interfaces do not conflict with it.
func listenDHCP(ctx context.Context, ifname string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if err := unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname); err != nil {
				serr = fmt.Errorf("SO_BINDTODEVICE: %w", err)
				return
			}
			for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_BROADCAST} {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 1); err != nil {
					serr = fmt.Errorf("setsockopt %d: %w", opt, err)
					return
				}
			}
		})
		return errors.Join(err, serr)
	}}
	conn, err := lc.ListenPacket(ctx, "udp4", "0.0.0.0:67")
	if err != nil {
		return nil, fmt.Errorf("binding DHCP to interface %s: %w", ifname, err)
	}
	return conn, nil
}
