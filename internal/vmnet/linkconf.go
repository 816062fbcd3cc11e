package vmnet

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// A tap's per-interface settings, by netlink rather than /proc/sys/net: an unprivileged
// launcher container (CAP_NET_ADMIN, no more) has /proc/sys read-only, but netlink changes
// the node's network namespace for it all the same. Package netlink has no call for these
// two, so the messages are made here.

// Attributes of the kernel's uapi (linux/ip.h, linux/neighbour.h) that x/sys/unix lacks.
const (
	ipv4DevconfProxyARP = 3  // IPV4_DEVCONF_PROXY_ARP, in IFLA_INET_CONF
	ndtaName            = 1  // NDTA_NAME: the neighbour table, "arp_cache" for IPv4
	ndtaParms           = 6  // NDTA_PARMS: one interface's parameters
	ndtpaIfindex        = 1  // NDTPA_IFINDEX
	ndtpaProxyDelay     = 13 // NDTPA_PROXY_DELAY, u64 milliseconds
)

// setProxyARP turns proxy ARP on for the link (net.ipv4.conf.<link>.proxy_arp=1): the IPv4
// devconf in IFLA_AF_SPEC of RTM_SETLINK, as `ip` does not offer but the kernel takes.
func setProxyARP(index int) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	conf := spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(ipv4DevconfProxyARP, nl.Uint32Attr(1))
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("turning proxy ARP on: %w", err)
	}
	return nil
}

// setProxyDelay sets how long the link waits before a proxy ARP answer
// (net.ipv4.neigh.<link>.proxy_delay): RTM_SETNEIGHTBL on the ARP table's parameters of
// the link, as `ip ntable change name arp_cache dev LINK proxy_delay MS` does.
func setProxyDelay(index int, ms uint64) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETNEIGHTBL, unix.NLM_F_ACK)
	req.AddData(ndtmsg{family: unix.AF_INET})
	req.AddData(nl.NewRtAttr(ndtaName, nl.ZeroTerminated("arp_cache")))
	parms := nl.NewRtAttr(ndtaParms, nil)
	parms.AddRtAttr(ndtpaIfindex, nl.Uint32Attr(uint32(index)))
	parms.AddRtAttr(ndtpaProxyDelay, nl.Uint64Attr(ms))
	req.AddData(parms)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("setting the proxy ARP delay: %w", err)
	}
	return nil
}

// ndtmsg is struct ndtmsg: the family, then padding.
type ndtmsg struct{ family uint8 }

func (m ndtmsg) Len() int          { return 4 }
func (m ndtmsg) Serialize() []byte { return []byte{m.family, 0, 0, 0} }

// noIPv6 keeps IPv6 off the link. disable_ipv6 (which drops every IPv6 packet on it) is a
// sysctl only, written where /proc/sys is writable (a privileged launcher); where it is
// read-only the link at least gets no IPv6 address (address generation none, set before
// it goes up), so the node neither solicits routers nor answers the guest from it. A
// kernel without IPv6 needs neither.
func noIPv6(link netlink.Link, name string) error {
	err := netlink.LinkSetIP6AddrGenMode(link, nl.IN6_ADDR_GEN_MODE_NONE)
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
		return fmt.Errorf("turning IPv6 address generation off: %w", err)
	}
	err = writeSysctl("ipv6/conf/"+name+"/disable_ipv6", "1")
	if err != nil && !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
