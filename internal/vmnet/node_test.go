package vmnet

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestPrepareNodeRoutesEveryRange: with several VM ranges, every one is on-link on the
// uplink, and proxy entries left in any of them are swept, while one outside them stays.
func TestPrepareNodeRoutesEveryRange(t *testing.T) {
	ranges := []netip.Prefix{netip.MustParsePrefix("10.66.10.0/24"), netip.MustParsePrefix("10.66.20.0/24")}
	var routes, proxies []string
	inNewNetns(t, func() error {
		up := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up1"}
		if err := netlink.LinkAdd(up); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(up); err != nil {
			return err
		}
		l, err := netlink.LinkByName("up0")
		if err != nil {
			return err
		}
		for _, a := range []string{"10.66.10.9", "10.66.20.9", "10.66.40.9"} {
			n := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, Flags: netlink.NTF_PROXY, IP: net.ParseIP(a)}
			if err := netlink.NeighAdd(n); err != nil {
				return fmt.Errorf("proxy entry %s: %w", a, err)
			}
		}
		name, err := PrepareNode(ranges, "up0")
		if err != nil {
			return err
		}
		if name != "up0" {
			return fmt.Errorf("uplink %q, want up0", name)
		}
		rs, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil && r.Scope == netlink.SCOPE_LINK {
				routes = append(routes, r.Dst.String())
			}
		}
		ps, err := netlink.NeighProxyList(l.Attrs().Index, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, p := range ps {
			proxies = append(proxies, p.IP.String())
		}
		return nil
	})
	slices.Sort(routes)
	if fmt.Sprint(routes) != "[10.66.10.0/24 10.66.20.0/24]" {
		t.Errorf("on-link routes on the uplink %v, want both ranges", routes)
	}
	if fmt.Sprint(proxies) != "[10.66.40.9]" {
		t.Errorf("proxy entries left %v, want only 10.66.40.9 (outside the ranges)", proxies)
	}
}
