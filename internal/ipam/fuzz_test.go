package ipam

import (
	"net/netip"
	"testing"
)

// FuzzCheck checks the address a VM asks for (spec.virtualMachineIPAddress, written by
// whoever may create a VM): an address Check accepts is in the range, is spelled one way
// only, and its lease name reads back as it, so that two spellings of one address cannot
// get two leases.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{"10.66.10.7", "10.66.10.1", "10.66.10.255", "10.66.10.07", "::ffff:10.66.10.7",
		"10.66.10.7%eth0", " 10.66.10.7", "10.66.10.7/24", "1.2.3.4", "", "10-66-10-7"} {
		f.Add("10.66.10.0/24", s)
	}
	f.Add("10.0.0.0/8", "10.255.255.254")
	f.Add("192.168.0.8/29", "192.168.0.10")
	f.Fuzz(func(t *testing.T, cidr, addr string) {
		r, err := ParseRange(cidr)
		if err != nil {
			return
		}
		if r.Check(addr) != nil {
			return
		}
		a, err := netip.ParseAddr(addr)
		if err != nil || !a.Is4() || a.String() != addr || !r.Prefix().Contains(a) || a == r.Gateway() {
			t.Fatalf("range %s accepted %q", r, addr)
		}
		if back, ok := AddressOf(LeaseName(addr)); !ok || back != addr {
			t.Fatalf("lease %s of %q reads back as %q (%v)", LeaseName(addr), addr, back, ok)
		}
	})
}

// FuzzParseRanges reads the range list an admin configures (--ip-range, the ipRange of
// the deploy config): a list it accepts has no overlapping ranges, reads back the same from
// its String, counts the addresses of its ranges, and gives each address it accepts to one
// range only, one that After walks from and to within the list.
func FuzzParseRanges(f *testing.F) {
	for _, s := range []string{DefaultRanges, "10.66.10.0/24", "10.66.10.0/24,10.66.10.0/25", " 10.0.0.0/8 ,192.168.0.0/29",
		"10.66.10.0/24,,10.66.20.0/24", "10.66.10.0/30", "::/0,10.0.0.0/8", "0.0.0.0/1,128.0.0.0/1"} {
		f.Add(s, "10.66.20.77")
	}
	f.Fuzz(func(t *testing.T, list, addr string) {
		rs, err := ParseRanges(list)
		if err != nil {
			return
		}
		back, err := ParseRanges(rs.String())
		if err != nil || back.String() != rs.String() {
			t.Fatalf("%q read as %s, which reads back as %s (%v)", list, rs, back, err)
		}
		size := 0
		for i, r := range rs.List() {
			size += r.Size()
			for _, o := range rs.List()[:i] {
				if o.Prefix().Overlaps(r.Prefix()) {
					t.Fatalf("%q: ranges %s and %s overlap", list, o, r)
				}
			}
		}
		if size != rs.Size() {
			t.Fatalf("%q: Size %d, the ranges hold %d", list, rs.Size(), size)
		}
		if rs.Check(addr) != nil {
			return
		}
		a := netip.MustParseAddr(addr)
		in := 0
		for _, r := range rs.List() {
			if r.Check(addr) == nil {
				in++
			}
		}
		if in != 1 || !rs.Contains(a) {
			t.Fatalf("%q accepted %s, which %d of its ranges accept", list, addr, in)
		}
		if n, _ := rs.After(a); !rs.Contains(n) {
			t.Fatalf("%q: after %s comes %s, outside the ranges", list, addr, n)
		}
	})
}
