package ipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// Range is a block of addresses for VMs. The network address, the first host (kept for a
// gateway) and the broadcast address are never handed out.
type Range struct {
	prefix netip.Prefix
}

// ParseRange reads a CIDR such as 10.66.10.0/24.
func ParseRange(cidr string) (Range, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return Range{}, fmt.Errorf("VM address range %q is not a CIDR: %w", cidr, err)
	}
	if !p.Addr().Is4() {
		return Range{}, fmt.Errorf("VM address range %q: only IPv4 is supported", cidr)
	}
	if p.Bits() > 29 {
		return Range{}, fmt.Errorf("VM address range %q is too small: use /29 or larger", cidr)
	}
	return Range{prefix: p.Masked()}, nil
}

// String is the range in CIDR form.
func (r Range) String() string { return r.prefix.String() }

// Bits is the range's prefix length.
func (r Range) Bits() int { return r.prefix.Bits() }

// Prefix is the range as a prefix.
func (r Range) Prefix() netip.Prefix { return r.prefix }

// Gateway is the address kept for the VMs' gateway.
func (r Range) Gateway() netip.Addr { return r.prefix.Addr().Next() }

// Contains tells whether addr may be given to a VM.
func (r Range) Contains(addr netip.Addr) bool {
	return r.prefix.Contains(addr) && addr != r.prefix.Addr() && addr != r.Gateway() && addr != r.broadcast()
}

func (r Range) broadcast() netip.Addr {
	a := r.prefix.Addr().As4()
	host := uint32(1)<<(32-r.prefix.Bits()) - 1
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Check explains why a requested address cannot be used, or returns nil.
func (r Range) Check(addr string) error {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("%q is not an IPv4 address", addr)
	}
	if !r.Contains(a) {
		return fmt.Errorf("%s is outside the VM address range %s (or is its network, gateway or broadcast address)", addr, r)
	}
	return nil
}

// Size is how many addresses of the range may be given to VMs.
func (r Range) Size() int { return 1<<(32-r.prefix.Bits()) - 3 }

// reserved names which of the range's kept addresses a is.
func (r Range) reserved(a netip.Addr) string {
	switch a {
	case r.prefix.Addr():
		return "network"
	case r.Gateway():
		return "gateway"
	}
	return "broadcast"
}

// first is the first address of the range a VM may get.
func (r Range) first() netip.Addr { return r.Gateway().Next() }

// After returns the address of the range that follows a (the first one when a is not in
// the range or is the last); wrapped says it went round to the first.
func (r Range) After(a netip.Addr) (next netip.Addr, wrapped bool) {
	first := r.first()
	if !a.IsValid() || !r.Contains(a) {
		return first, true
	}
	if n := a.Next(); r.Contains(n) {
		return n, false
	}
	return first, true
}

// LeaseName is the name of the lease object for an address: ip-10-66-10-14.
func LeaseName(addr string) string {
	return "ip-" + strings.ReplaceAll(addr, ".", "-")
}

// AddressOf reads the address back from a lease name; ok is false for other names.
func AddressOf(leaseName string) (string, bool) {
	rest, found := strings.CutPrefix(leaseName, "ip-")
	if !found {
		return "", false
	}
	a, err := netip.ParseAddr(strings.ReplaceAll(rest, "-", "."))
	if err != nil || !a.Is4() {
		return "", false
	}
	return a.String(), true
}

// LeaseNameToAddress is AddressOf for a name known to be a lease's ("" otherwise).
func LeaseNameToAddress(leaseName string) string {
	a, _ := AddressOf(leaseName)
	return a
}
