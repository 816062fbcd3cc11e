// Package netguard decides which network destinations the controller may connect to on a
// tenant's behalf. An image or disk's source URL is a tenant's input: without a guard, the
// controller, which runs inside the cluster with the cluster's reach, would fetch the
// cluster's own endpoints (a cloud's metadata service, a node's or the control plane's
// ports on loopback, a Service) and hand their answers back as a disk the tenant reads.
//
// The guard is applied where the connection is made (net.Dialer.Control), to the address
// actually dialled: after DNS, on every redirect, and however the URL spelled the host.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// DefaultDenied are the networks no import reaches unless the operator allows them:
// loopback (the controller's own and, under ferry up, the control plane's ports),
// link-local (a cloud's metadata service at 169.254.169.254), "this network", multicast
// and broadcast.
var DefaultDenied = []string{
	"127.0.0.0/8", "::1/128",
	"169.254.0.0/16", "fe80::/10",
	"0.0.0.0/8", "::/128",
	"224.0.0.0/4", "ff00::/8",
	"255.255.255.255/32",
}

// Rule is a network, or one port in a network.
type Rule struct {
	Prefix netip.Prefix
	Port   uint16 // 0: every port
}

func (r Rule) String() string {
	if r.Port == 0 {
		return r.Prefix.String()
	}
	if r.Prefix.IsSingleIP() {
		return netip.AddrPortFrom(r.Prefix.Addr(), r.Port).String()
	}
	return r.Prefix.String() + " port " + strconv.Itoa(int(r.Port))
}

func (r Rule) matches(a netip.AddrPort) bool {
	return r.Prefix.Contains(a.Addr()) && (r.Port == 0 || r.Port == a.Port())
}

// more reports whether r is more specific than o: a longer prefix, or, at the same
// length, a port.
func (r Rule) more(o Rule) bool {
	if r.Prefix.Bits() != o.Prefix.Bits() {
		return r.Prefix.Bits() > o.Prefix.Bits()
	}
	return r.Port != 0 && o.Port == 0
}

// ParseRule reads a rule: a CIDR (10.0.0.0/8), an address (10.1.2.3, ::1), or an address
// with a port (10.1.2.3:8080, [::1]:8080).
func ParseRule(s string) (Rule, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return Rule{Prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap().WithZone("")
		return Rule{Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return Rule{}, fmt.Errorf("%q: port 0 is no port; leave the port out to mean every port", s)
		}
		a := ap.Addr().Unmap().WithZone("")
		return Rule{Prefix: netip.PrefixFrom(a, a.BitLen()), Port: ap.Port()}, nil
	}
	return Rule{}, fmt.Errorf("%q is not a network: write a CIDR (10.0.0.0/8), an address (10.0.0.1, ::1) or an address and port (10.0.0.1:8080, [::1]:8080)", s)
}

// Policy says which destinations are allowed: the most specific rule that matches an
// address decides (an allowed /8 with one denied port is allowed but on that port; a
// network both allowed and denied is allowed, so that allowing one of DefaultDenied works);
// an address no rule matches is allowed.
type Policy struct {
	Allowed, Denied []Rule
	// Flag names the setting in refusals, so that the message says what to change.
	AllowFlag, DenyFlag string
	// DeniedHosts, when set, gives more addresses denied on every port, looked up at each
	// connection: the cluster's nodes, whose kubelets, agents and host services listen
	// there. An allowed rule of the same address with a port still opens that port.
	DeniedHosts func() []netip.Addr
	// DeniedHostsWhat names DeniedHosts in refusals ("a node's address").
	DeniedHostsWhat string
}

// New builds a policy from lists of rules as ParseRule reads them.
func New(allowed, denied []string) (*Policy, error) {
	p := &Policy{AllowFlag: "--import-allowed-networks", DenyFlag: "--import-denied-networks"}
	for _, s := range allowed {
		if strings.TrimSpace(s) == "" {
			continue
		}
		r, err := ParseRule(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.AllowFlag, err)
		}
		p.Allowed = append(p.Allowed, r)
	}
	for _, s := range denied {
		if strings.TrimSpace(s) == "" {
			continue
		}
		r, err := ParseRule(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.DenyFlag, err)
		}
		p.Denied = append(p.Denied, r)
	}
	return p, nil
}

// Default is the policy with DefaultDenied and nothing allowed.
func Default() *Policy {
	p, err := New(nil, DefaultDenied)
	if err != nil {
		panic(err)
	}
	return p
}

// Refused is a destination the policy does not allow.
type Refused struct {
	Dest netip.AddrPort
	Rule Rule
	Flag string
}

func (e *Refused) Error() string {
	return fmt.Sprintf("the controller does not connect to %s: it is in %s (%s), which holds the cluster's own services, not images; the cluster's administrator may allow it with --import-allowed-networks",
		e.Dest, e.Rule, e.Flag)
}

// Check decides one destination.
func (p *Policy) Check(dest netip.AddrPort) error {
	// A zoned address (fe80::1%eth0) is in no prefix to netip: the zone goes first.
	dest = netip.AddrPortFrom(dest.Addr().Unmap().WithZone(""), dest.Port())
	var best Rule
	found, deny, host := false, false, false
	pick := func(rules []Rule, denied, hosts bool) {
		for _, r := range rules {
			if r.matches(dest) && (!found || r.more(best) || (!denied && !best.more(r))) {
				best, found, deny, host = r, true, denied, hosts
			}
		}
	}
	pick(p.Denied, true, false)
	if p.DeniedHosts != nil {
		var hosts []Rule
		for _, a := range p.DeniedHosts() {
			a = a.Unmap().WithZone("")
			hosts = append(hosts, Rule{Prefix: netip.PrefixFrom(a, a.BitLen())})
		}
		pick(hosts, true, true)
	}
	pick(p.Allowed, false, false) // last: at the same specificity, allowed wins
	if !found || !deny {
		return nil
	}
	r := &Refused{Dest: dest, Rule: best, Flag: p.DenyFlag}
	if host {
		r.Flag = p.DeniedHostsWhat
	}
	return r
}

// Control is a net.Dialer.Control that refuses what the policy does not allow; a nil
// policy is Default.
func (p *Policy) Control(_, address string, _ syscall.RawConn) error {
	if p == nil {
		p = Default()
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("netguard: dialling %q: %w", address, err)
	}
	return p.Check(ap)
}

// IsRefused reports whether err (or what it wraps) is a refusal of the policy.
func IsRefused(err error) (*Refused, bool) {
	var r *Refused
	ok := errors.As(err, &r)
	return r, ok
}

// Dialer is a dialer that applies the policy to every address it connects to.
func (p *Policy) Dialer(d *net.Dialer) *net.Dialer {
	dd := *d
	dd.Control = p.Control
	return &dd
}
