package ipam

import (
	"fmt"
	"net/netip"
	"strings"
)

// DefaultRanges are the VM address ranges used when none are configured: three /24s, so
// that the user guide's static address (10.66.20.77) is one of them.
const DefaultRanges = "10.66.10.0/24,10.66.20.0/24,10.66.30.0/24"

// Ranges are the VM address ranges, Deckhouse's virtualMachineCIDRs: addresses are given
// from the first range until it is full, then from the next. The ranges never overlap, so
// every address belongs to one range at most, whose gateway and prefix length its VM gets.
//
// Each range keeps its network, first host and broadcast address. Deckhouse keeps only the
// network and broadcast addresses; Ferry also keeps the first host because its VM network
// is routed: every guest's gateway is the first host of its range (the tap answers for it,
// package vmnet), so no VM may hold that address.
type Ranges struct {
	list []Range
}

// ParseRanges reads a comma-separated list of IPv4 CIDRs (10.66.10.0/24,10.66.20.0/24),
// in allocation order. Spaces around an entry are ignored; an empty entry, a range that is
// not a /29 or larger, and ranges that overlap are refused.
func ParseRanges(list string) (Ranges, error) {
	var out Ranges
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return Ranges{}, fmt.Errorf("VM address ranges %q: an entry is empty (write CIDRs separated by commas, such as %s)", list, DefaultRanges)
		}
		r, err := ParseRange(item)
		if err != nil {
			return Ranges{}, err
		}
		for _, o := range out.list {
			if o.prefix.Overlaps(r.prefix) {
				return Ranges{}, fmt.Errorf("VM address ranges %s and %s overlap: list each address in one range only", o, r)
			}
		}
		out.list = append(out.list, r)
	}
	return out, nil
}

// MustParseRanges is ParseRanges for lists known to be valid (tests, constants).
func MustParseRanges(list string) Ranges {
	r, err := ParseRanges(list)
	if err != nil {
		panic(err)
	}
	return r
}

// String is the list in the form ParseRanges reads.
func (rs Ranges) String() string {
	s := make([]string, len(rs.list))
	for i, r := range rs.list {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

// List is the ranges in allocation order.
func (rs Ranges) List() []Range { return append([]Range(nil), rs.list...) }

// Prefixes is the ranges as prefixes, in allocation order.
func (rs Ranges) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, len(rs.list))
	for i, r := range rs.list {
		out[i] = r.prefix
	}
	return out
}

// RangeOf is the range whose prefix holds addr (its reserved addresses included); ok is
// false when none does.
func (rs Ranges) RangeOf(addr netip.Addr) (r Range, ok bool) {
	for _, r := range rs.list {
		if r.prefix.Contains(addr) {
			return r, true
		}
	}
	return Range{}, false
}

// Contains tells whether addr may be given to a VM.
func (rs Ranges) Contains(addr netip.Addr) bool {
	r, ok := rs.RangeOf(addr)
	return ok && r.Contains(addr)
}

// Check explains why a requested address cannot be used, or returns nil. An address
// outside every range gets an error that names them all.
func (rs Ranges) Check(addr string) error {
	if len(rs.list) == 1 {
		return rs.list[0].Check(addr)
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("%q is not an IPv4 address", addr)
	}
	if r, ok := rs.RangeOf(a); ok {
		if !r.Contains(a) {
			return fmt.Errorf("%s is the %s address of the VM address range %s, which no VM may have", addr, r.reserved(a), r)
		}
		return nil
	}
	return fmt.Errorf("%s is outside the VM address ranges %s", addr, rs.listed())
}

// listed names the ranges for people: "10.66.10.0/24, 10.66.20.0/24 and 10.66.30.0/24".
func (rs Ranges) listed() string {
	s := strings.Split(rs.String(), ",")
	if len(s) < 2 {
		return rs.String()
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// Size is how many addresses of all the ranges may be given to VMs.
func (rs Ranges) Size() int {
	n := 0
	for _, r := range rs.list {
		n += r.Size()
	}
	return n
}

// After returns the address that follows a in allocation order: the next of its range, or
// the first of the next range after the last of one; wrapped says it went round to the
// first address of the first range (also when a is in no range).
func (rs Ranges) After(a netip.Addr) (next netip.Addr, wrapped bool) {
	if len(rs.list) == 0 {
		return netip.Addr{}, true
	}
	for i, r := range rs.list {
		if !r.Contains(a) {
			continue
		}
		if n, w := r.After(a); !w {
			return n, false
		}
		if i+1 < len(rs.list) {
			return rs.list[i+1].first(), false
		}
		break
	}
	return rs.list[0].first(), true
}
