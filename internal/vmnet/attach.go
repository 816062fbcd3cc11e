package vmnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AnnounceSchedule is when gratuitous ARPs go out after Attach, counted from it: the
// first at once, the rest to cover a station that missed one.
var AnnounceSchedule = []time.Duration{0, 50 * time.Millisecond, 250 * time.Millisecond, time.Second, 3 * time.Second}

// Attach makes this node the VM's: a /32 route to its address through the tap, a
// proxy-ARP entry for the address on the uplink, and gratuitous ARPs there (the first
// before Attach returns, the rest on AnnounceSchedule until ctx ends). Call it when the
// guest starts to run here.
func (t *Tap) Attach(ctx context.Context) error {
	addr, up := t.nic.Address.Addr(), t.uplink
	route := &netlink.Route{LinkIndex: t.index, Dst: hostNet(addr), Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("attaching %s: route through %s: %w", addr, t.Name, err)
	}
	// The announcement first: it moves the stations that talk to the VM now; the proxy
	// entry serves those that ask later.
	if err := Announce(up, addr); err != nil {
		return fmt.Errorf("attaching %s: %w", addr, err)
	}
	if err := netlink.NeighSet(proxyEntry(up, addr)); err != nil {
		return fmt.Errorf("attaching %s: proxy ARP on %s: %w", addr, up.Attrs().Name, err)
	}
	go func() {
		start := time.Now()
		for _, at := range AnnounceSchedule[1:] {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(start.Add(at))):
			}
			if !t.routed() {
				return // given up meanwhile (Detach)
			}
			_ = Announce(up, addr)
		}
	}()
	return nil
}

// Detach gives the VM's address up on this node: the route and the proxy-ARP entry go.
// Missing pieces are no error. Call it when the guest has left (a completed outgoing
// migration) or stopped.
func (t *Tap) Detach() error {
	addr := t.nic.Address.Addr()
	var errs []error
	route := &netlink.Route{LinkIndex: t.index, Dst: hostNet(addr), Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteDel(route); err != nil && !notFound(err) {
		errs = append(errs, fmt.Errorf("removing the route to %s: %w", addr, err))
	}
	if err := netlink.NeighDel(proxyEntry(t.uplink, addr)); err != nil && !notFound(err) {
		errs = append(errs, fmt.Errorf("removing proxy ARP for %s: %w", addr, err))
	}
	return errors.Join(errs...)
}

// routed tells whether the node still routes the VM's address through the tap.
func (t *Tap) routed() bool {
	rs, err := netlink.RouteGet(net.IP(t.nic.Address.Addr().AsSlice()))
	return err == nil && len(rs) > 0 && rs[0].LinkIndex == t.index
}

// Uplink is the interface through which this node reaches gw: the link the VM range is on.
func Uplink(gw netip.Addr) (netlink.Link, error) {
	rs, err := netlink.RouteGet(net.IP(gw.AsSlice()))
	if err != nil {
		return nil, fmt.Errorf("no route to the VM gateway %s: %w", gw, err)
	}
	if len(rs) == 0 {
		return nil, fmt.Errorf("no route to the VM gateway %s", gw)
	}
	l, err := netlink.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return nil, fmt.Errorf("the link towards %s: %w", gw, err)
	}
	return l, nil
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(32, 32)}
}

func proxyEntry(l netlink.Link, a netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, Flags: netlink.NTF_PROXY, IP: net.IP(a.AsSlice())}
}

func notFound(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}

// Announce sends one gratuitous ARP on l: addr is at l's MAC. Stations that know addr
// update their entry at once (Linux does so for gratuitous ARP whatever its locktime).
func Announce(l netlink.Link, addr netip.Addr) error {
	mac := l.Attrs().HardwareAddr
	if len(mac) != 6 {
		return fmt.Errorf("announcing %s: %s has no Ethernet address", addr, l.Attrs().Name)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return fmt.Errorf("announcing %s: packet socket: %w", addr, err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{
		Protocol: htons(unix.ETH_P_ARP),
		Ifindex:  l.Attrs().Index,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	if err := unix.Sendto(fd, garp(mac, addr), 0, to); err != nil {
		return fmt.Errorf("announcing %s on %s: %w", addr, l.Attrs().Name, err)
	}
	return nil
}

// garp is an ARP request whose sender and target address are both addr (RFC 5227's
// announcement).
func garp(mac net.HardwareAddr, addr netip.Addr) []byte {
	b := make([]byte, 28)
	binary.BigEndian.PutUint16(b[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(b[2:], 0x0800) // IPv4
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], 1) // request
	copy(b[8:14], mac)
	ip := addr.As4()
	copy(b[14:18], ip[:])
	copy(b[24:28], ip[:]) // target MAC stays zero
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
