package vmnet

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// PrepareNode readies this node's network namespace for VMs of vmRanges: forwarding on,
// proxy ARP answered without delay on the uplink, and every range on-link there, so the
// node reaches a VM on another node by asking the link (whose owner answers by proxy), and
// a guest reaches a VM of another range through its gateway (this node).
// uplink "" takes the interface of the default route. It returns the uplink's name.
// It also removes what launchers killed outright left: proxy entries and tap guards.
// It is idempotent.
func PrepareNode(vmRanges []netip.Prefix, uplink string) (string, error) {
	var l netlink.Link
	var err error
	if uplink != "" {
		l, err = netlink.LinkByName(uplink)
	} else {
		l, err = defaultLink()
	}
	if err != nil {
		return "", fmt.Errorf("preparing the node for VM networking: %w", err)
	}
	name := l.Attrs().Name
	for _, s := range []struct{ path, value string }{
		{"ipv4/ip_forward", "1"},
		{"ipv4/neigh/" + name + "/proxy_delay", "0"},
	} {
		if err := writeSysctl(s.path, s.value); err != nil {
			return "", fmt.Errorf("preparing the node for VM networking: %w", err)
		}
	}
	for _, p := range vmRanges {
		r := &netlink.Route{
			LinkIndex: l.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: net.IP(p.Masked().Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)},
		}
		if err := netlink.RouteReplace(r); err != nil {
			return "", fmt.Errorf("preparing the node for VM networking: route to %s on %s: %w", p, name, err)
		}
	}
	sweepProxies(l, vmRanges)
	// Best effort, as the proxies: a stale guard guards a tap that no longer exists.
	_ = sweepGuards()
	return name, nil
}

// sweepProxies removes proxy-ARP entries for VM addresses this node no longer routes to a
// tap: what a launcher killed outright (a node reset) left behind. Such an entry answers
// nothing (proxy ARP needs the route), but it misleads whoever reads `ip neigh`.
func sweepProxies(uplink netlink.Link, vmRanges []netip.Prefix) {
	entries, err := netlink.NeighProxyList(uplink.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return
	}
	for _, e := range entries {
		a, ok := netip.AddrFromSlice(e.IP)
		if !ok || !inAny(vmRanges, a.Unmap()) {
			continue
		}
		rs, err := netlink.RouteGet(e.IP)
		if err == nil && len(rs) > 0 && rs[0].LinkIndex != uplink.Attrs().Index {
			continue // routed to a tap: a running VM's
		}
		e := e
		_ = netlink.NeighDel(&e)
	}
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func defaultLink() (netlink.Link, error) {
	rs, err := netlink.RouteGet(net.IPv4(192, 0, 2, 1)) // any off-link address takes the default route
	if err != nil || len(rs) == 0 {
		return nil, fmt.Errorf("no default route to find the uplink by; name it (--vm-uplink): %v", err)
	}
	return netlink.LinkByIndex(rs[0].LinkIndex)
}
