package vmnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"
)

// The guest of these tests: 10.66.10.5 with its MAC. Its neighbours .6 and .7 are the
// addresses it must not send as.
var (
	guestAddr = netip.MustParseAddr("10.66.10.5")
	guestMAC  = GuestMAC(guestAddr)
	otherVM   = netip.MustParseAddr("10.66.10.6")
	thirdVM   = netip.MustParseAddr("10.66.10.7")
	nodeAddr  = netip.MustParseAddr("192.0.2.1") // a local address of the node
	zeroAddr  = netip.IPv4Unspecified()
	bcastAddr = netip.MustParseAddr("255.255.255.255")
)

// guestTap is a tap standing for a VM's: frames written to its descriptor are what the
// guest sends, and they enter the node's namespace through the tap as QEMU's would.
type guestTap struct {
	name  string
	index int
	file  *os.File
}

// newGuestTap makes the tap as OpenTap does, without its guard, routes the VM range to
// it (so that neither rp_filter nor a missing route is what drops a packet), and puts
// nodeAddr on lo, up.
func newGuestTap(name string) (*guestTap, error) {
	f, err := openTun(name, 0)
	if err != nil {
		return nil, err
	}
	link, err := netlink.LinkByName(name)
	if err == nil {
		err = netlink.LinkSetHardwareAddr(link, TapMAC)
	}
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err == nil {
		err = netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: net.IPv4(10, 66, 10, 0), Mask: net.CIDRMask(24, 32)}})
	}
	if err == nil {
		err = localAddr()
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &guestTap{name: name, index: link.Attrs().Index, file: f}, nil
}

func localAddr() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(nodeAddr.AsSlice()), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrReplace(lo, a); err != nil {
		return err
	}
	return nil
}

// send writes one Ethernet frame as the guest, behind the virtio-net header the tap
// expects (IFF_VNET_HDR; all zero: no offloads).
func (g *guestTap) send(frame []byte) error {
	_, err := g.file.Write(append(make([]byte, 10), frame...))
	return err
}

func ethernet(src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	b := append([]byte{}, TapMAC...)
	b = append(b, src...)
	b = binary.BigEndian.AppendUint16(b, etherType)
	return append(b, payload...)
}

// udp4 is an IPv4 UDP datagram from src:68 to dst:dport (no UDP checksum, as IPv4 allows).
func udp4(src, dst netip.Addr, dport uint16, payload string) []byte {
	ip := make([]byte, 20, 28+len(payload))
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	ip = binary.BigEndian.AppendUint16(ip, 68)
	ip = binary.BigEndian.AppendUint16(ip, dport)
	ip = binary.BigEndian.AppendUint16(ip, uint16(8+len(payload)))
	ip = binary.BigEndian.AppendUint16(ip, 0)
	return append(ip, payload...)
}

// arpRequest asks for tpa as sender sha/spa.
func arpRequest(sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, 0, 1}
	s, t := spa.As4(), tpa.As4()
	b = append(b, sha...)
	b = append(b, s[:]...)
	b = append(b, make([]byte, 6)...)
	return append(b, t[:]...)
}

// ipv6UDP is an IPv6 UDP datagram from the guest's link-local address to all nodes.
func ipv6UDP() []byte {
	b := make([]byte, 40, 48)
	b[0], b[6], b[7] = 0x60, unix.IPPROTO_UDP, 255
	binary.BigEndian.PutUint16(b[4:], 8)
	copy(b[8:], netip.MustParseAddr("fe80::66:aff:fe42:a05").AsSlice())
	copy(b[24:], netip.MustParseAddr("ff02::1").AsSlice())
	return append(b, 0, 68, 0, 67, 0, 8, 0, 0)
}

// listener collects what arrives on a UDP port of the node.
type listener struct {
	conn *net.UDPConn
	got  chan string
}

func listenUDP(port int) (*listener, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return nil, err
	}
	l := &listener{conn: c, got: make(chan string, 64)}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				close(l.got)
				return
			}
			l.got <- string(buf[:n])
		}
	}()
	return l, nil
}

// until returns what arrived up to and including marker, waiting for it up to 5 s.
func (l *listener) until(marker string) ([]string, error) {
	var got []string
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s, ok := <-l.got:
			if !ok {
				return got, fmt.Errorf("listener closed before %q arrived (got %q)", marker, got)
			}
			got = append(got, s)
			if s == marker {
				return got, nil
			}
		case <-deadline:
			return got, fmt.Errorf("%q did not arrive within 5 s (got %q)", marker, got)
		}
	}
}

// neighbour waits up to 5 s for the node to have learnt addr on the tap (from an ARP).
func (g *guestTap) neighbour(addr netip.Addr) bool {
	// Polled: neighbour changes have no event here.
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		ns, _ := netlink.NeighList(g.index, netlink.FAMILY_V4)
		return slices.ContainsFunc(ns, func(n netlink.Neigh) bool { return n.IP.Equal(net.IP(addr.AsSlice())) }), nil
	})
	return err == nil
}

// waitDrops waits up to 5 s for the guard's counters to reach want.
func waitDrops(g *guard, want Drops) (Drops, error) {
	var d Drops
	// Polled: counters have no event. At the deadline, what was counted is returned.
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		var err error
		d, err = g.drops()
		return err != nil || d == want, err
	})
	if wait.Interrupted(err) {
		err = nil
	}
	return d, err
}

func guardTableNames() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	ts, err := guardTables(c, func(string) bool { return true })
	var names []string
	for _, t := range ts {
		names = append(names, t.Name)
	}
	return names, err
}

// TestGuardDropsSpoofing: what the guest sends as itself reaches the node; what it sends
// as another VM (IPv4 or ARP), from another MAC, from no address other than to DHCP, or
// over IPv6 is dropped and counted. The same frames pass before the guard is installed,
// so it is the guard that drops them.
func TestGuardDropsSpoofing(t *testing.T) {
	inNewNetns(t, func() error {
		g, err := newGuestTap(TapName(guestAddr))
		if err != nil {
			return err
		}
		defer g.file.Close()
		dhcp, err := listenUDP(67)
		if err != nil {
			return err
		}
		defer dhcp.conn.Close()
		other, err := listenUDP(68)
		if err != nil {
			return err
		}
		defer other.conn.Close()

		// Unguarded: the node takes another VM's address and ARP from this guest.
		if err := g.send(ethernet(guestMAC, unix.ETH_P_IP, udp4(otherVM, nodeAddr, 67, "unguarded spoof"))); err != nil {
			return err
		}
		if got, err := dhcp.until("unguarded spoof"); err != nil {
			return fmt.Errorf("without the guard: %w (got %q)", err, got)
		}
		if err := g.send(ethernet(guestMAC, unix.ETH_P_ARP, arpRequest(guestMAC, otherVM, nodeAddr))); err != nil {
			return err
		}
		if !g.neighbour(otherVM) {
			return errors.New("without the guard, the node did not learn the other VM's address from the guest's ARP")
		}

		gd, err := installGuard(g.name, guestMAC, guestAddr)
		if err != nil {
			return err
		}
		foreignMAC := net.HardwareAddr{0x02, 0x66, 10, 66, 10, 6}
		for _, f := range []struct {
			what  string
			frame []byte
		}{
			{"another VM's address", ethernet(guestMAC, unix.ETH_P_IP, udp4(otherVM, nodeAddr, 67, "spoof"))},
			{"another MAC", ethernet(foreignMAC, unix.ETH_P_IP, udp4(guestAddr, nodeAddr, 67, "foreign MAC"))},
			{"no address, not to DHCP", ethernet(guestMAC, unix.ETH_P_IP, udp4(zeroAddr, bcastAddr, 68, "unspecified"))},
			{"ARP as another VM", ethernet(guestMAC, unix.ETH_P_ARP, arpRequest(guestMAC, thirdVM, nodeAddr))},
			{"ARP with another sender MAC", ethernet(guestMAC, unix.ETH_P_ARP, arpRequest(foreignMAC, guestAddr, nodeAddr))},
			{"IPv6", ethernet(guestMAC, unix.ETH_P_IPV6, ipv6UDP())},
			// What passes, after what must not: each listener's marker.
			{"its own address", ethernet(guestMAC, unix.ETH_P_IP, udp4(guestAddr, nodeAddr, 68, "own"))},
			{"DHCP without an address", ethernet(guestMAC, unix.ETH_P_IP, udp4(zeroAddr, bcastAddr, 67, "dhcp"))},
		} {
			if err := g.send(f.frame); err != nil {
				return fmt.Errorf("sending %s: %w", f.what, err)
			}
		}
		if got, err := dhcp.until("dhcp"); err != nil || len(got) != 1 {
			return fmt.Errorf("on port 67 (DHCP): got %q, want only %q: %v", got, "dhcp", err)
		}
		if got, err := other.until("own"); err != nil || len(got) != 1 {
			return fmt.Errorf("on port 68: got %q, want only %q: %v", got, "own", err)
		}
		want := Drops{Spoofed: 5, Other: 1}
		if d, err := waitDrops(gd, want); err != nil || d != want {
			return fmt.Errorf("counters %+v, want %+v: %v", d, want, err)
		}
		// The guest's own ARP is taken; by the time it is, the earlier one as .7 would
		// have been too.
		if err := g.send(ethernet(guestMAC, unix.ETH_P_ARP, arpRequest(guestMAC, guestAddr, nodeAddr))); err != nil {
			return err
		}
		if !g.neighbour(guestAddr) {
			return errors.New("the guest's own ARP did not reach the node")
		}
		if ns, _ := netlink.NeighList(g.index, netlink.FAMILY_V4); slices.ContainsFunc(ns, func(n netlink.Neigh) bool {
			return n.IP.Equal(net.IP(thirdVM.AsSlice()))
		}) {
			return errors.New("the node learnt 10.66.10.7 from the guest's spoofed ARP")
		}
		if d, err := gd.drops(); err != nil || d != want {
			return fmt.Errorf("after the guest's own ARP, counters %+v, want still %+v: %v", d, want, err)
		}
		return nil
	})
}

// TestGuardLifecycle: a new instance on the tap replaces what an earlier one left in one
// step; Release keeps the guard while the tap exists (a QEMU still holds it) and removes
// it once the tap is gone; the node's sweep removes only guards whose tap is gone.
func TestGuardLifecycle(t *testing.T) {
	inNewNetns(t, func() error {
		name := TapName(guestAddr)
		g, err := newGuestTap(name)
		if err != nil {
			return err
		}
		defer g.file.Close()
		first, err := installGuard(name, guestMAC, guestAddr)
		if err != nil {
			return err
		}
		second, err := installGuard(name, guestMAC, guestAddr) // the launcher again, same tap
		if err != nil {
			return err
		}
		if names, err := guardTableNames(); err != nil || !slices.Equal(names, []string{second.table.Name}) {
			return fmt.Errorf("guard tables %q after a second install, want only the second's %q (the first was %q): %v",
				names, second.table.Name, first.table.Name, err)
		}

		// Another VM's tap, which the sweep must leave alone.
		neighbourTap, err := newGuestTap(TapName(otherVM))
		if err != nil {
			return err
		}
		defer neighbourTap.file.Close()
		kept, err := installGuard(neighbourTap.name, GuestMAC(otherVM), otherVM)
		if err != nil {
			return err
		}

		// QEMU's copy of the descriptor keeps the tap after the launcher closes its own.
		qemu, err := unix.Dup(int(g.file.Fd()))
		if err != nil {
			return err
		}
		tap := &Tap{Name: name, file: g.file, index: g.index, guard: second}
		if _, err := tap.Release(); err == nil || !strings.Contains(err.Error(), "still exists") {
			return fmt.Errorf("Release with the tap held: %v, want an error that it still exists", err)
		}
		if names, _ := guardTableNames(); !slices.Contains(names, second.table.Name) {
			return fmt.Errorf("the guard went while its tap was held: tables %q", names)
		}
		unix.Close(qemu) // QEMU exits
		if err := tapGone(name); err != nil {
			return err
		}
		if _, err := tap.Release(); err != nil {
			return fmt.Errorf("Release once the tap is gone: %w", err)
		}
		if err := second.remove(); err != nil {
			return fmt.Errorf("removing a guard already removed: %w, want no error", err)
		}
		if names, _ := guardTableNames(); !slices.Equal(names, []string{kept.table.Name}) {
			return fmt.Errorf("guard tables %q after Release, want only the other VM's %q", names, kept.table.Name)
		}

		// A launcher killed outright leaves its guard behind; the node's sweep takes it
		// once its tap is gone, and not the other VM's.
		g2, err := newGuestTap(name)
		if err != nil {
			return err
		}
		left, err := installGuard(name, guestMAC, guestAddr)
		if err != nil {
			return err
		}
		if err := sweepGuards(); err != nil {
			return err
		}
		if names, _ := guardTableNames(); len(names) != 2 {
			return fmt.Errorf("the sweep removed guards of existing taps: %q left, want %q and %q", names, left.table.Name, kept.table.Name)
		}
		g2.file.Close()
		if err := tapGone(name); err != nil {
			return err
		}
		if err := sweepGuards(); err != nil {
			return err
		}
		if names, _ := guardTableNames(); !slices.Equal(names, []string{kept.table.Name}) {
			return fmt.Errorf("guard tables %q after the sweep, want only the other VM's %q", names, kept.table.Name)
		}
		return nil
	})
}

// tapGone waits up to 5 s for the tap to go with its last descriptor.
func tapGone(name string) error {
	// Polled: no event for a link's end here.
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		_, err := netlink.LinkByName(name)
		return err != nil, nil
	})
	if err != nil {
		return fmt.Errorf("tap %s still exists 5 s after its last descriptor closed", name)
	}
	return nil
}

func TestTapOfGuard(t *testing.T) {
	for _, c := range []struct {
		table, tap string
		ok         bool
	}{
		{"ferry-ft0a420a05-1a2b3c4d", "ft0a420a05", true},
		{"ferry-ft0a420a05", "", false},
		{"ferry-", "", false},
		{"filter", "", false},
		{"ferry--1a2b", "", false},
	} {
		tap, ok := tapOfGuard(c.table)
		if tap != c.tap || ok != c.ok {
			t.Errorf("tapOfGuard(%q) = %q, %v; want %q, %v", c.table, tap, ok, c.tap, c.ok)
		}
	}
	name, err := guardTableName("ft0a420a05")
	if err != nil {
		t.Fatal(err)
	}
	if tap, ok := tapOfGuard(name); !ok || tap != "ft0a420a05" {
		t.Errorf("tapOfGuard(guardTableName(ft0a420a05) = %q) = %q, %v", name, tap, ok)
	}
}

// TestGuardNeedsOnlyNetAdmin: an unprivileged launcher pod's one capability for the
// guard is CAP_NET_ADMIN (in the node's network namespace); /proc/sys is not used. The
// test's thread drops every other capability before it makes the tap and its guard.
func TestGuardNeedsOnlyNetAdmin(t *testing.T) {
	inNewNetns(t, func() error {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3} // Pid 0: this thread
		var caps [2]unix.CapUserData
		caps[0].Effective = 1 << unix.CAP_NET_ADMIN
		caps[0].Permitted = caps[0].Effective
		if err := unix.Capset(&hdr, &caps[0]); err != nil {
			return fmt.Errorf("dropping all capabilities but CAP_NET_ADMIN: %w", err)
		}
		// The drop took: binding port 67 needs CAP_NET_BIND_SERVICE now.
		if _, err := listenUDP(67); !errors.Is(err, unix.EACCES) {
			return fmt.Errorf("binding port 67 with CAP_NET_ADMIN alone: %v, want EACCES (were the capabilities dropped?)", err)
		}
		g, err := newGuestTap(TapName(guestAddr))
		if err != nil {
			return err
		}
		defer g.file.Close()
		gd, err := installGuard(g.name, guestMAC, guestAddr)
		if err != nil {
			return err
		}
		if err := g.send(ethernet(guestMAC, unix.ETH_P_IP, udp4(otherVM, nodeAddr, 67, "spoof"))); err != nil {
			return err
		}
		want := Drops{Spoofed: 1}
		if d, err := waitDrops(gd, want); err != nil || d != want {
			return fmt.Errorf("counters %+v, want %+v: %v", d, want, err)
		}
		if err := gd.remove(); err != nil {
			return err
		}
		if names, err := guardTableNames(); err != nil || len(names) != 0 {
			return fmt.Errorf("guard tables %q after remove, want none: %v", names, err)
		}
		return nil
	})
}
