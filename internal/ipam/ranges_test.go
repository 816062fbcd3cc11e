package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseRanges(t *testing.T) {
	for _, tc := range []struct {
		list, want, err string
	}{
		{"10.66.10.0/24", "10.66.10.0/24", ""},
		{DefaultRanges, DefaultRanges, ""},
		{" 10.66.10.7/24 , 10.80.0.0/16", "10.66.10.0/24,10.80.0.0/16", ""},
		{"10.66.10.0/24,10.66.10.128/25", "", "10.66.10.0/24 and 10.66.10.128/25 overlap"},
		{"10.66.0.0/16,10.66.20.0/24", "", "10.66.0.0/16 and 10.66.20.0/24 overlap"},
		{"10.66.10.0/24,10.66.10.0/24", "", "overlap"},
		{"10.66.10.0/24,10.66.20.0/30", "", "10.66.20.0/30\" is too small"},
		{"10.66.10.0/24,10.66.20.5/32", "", "too small"},
		{"10.66.10.0/24,", "", "an entry is empty"},
		{"", "", "an entry is empty"},
		{"10.66.10.0/24,fd00::/64", "", "only IPv4"},
		{"10.66.10.0/24;10.66.20.0/24", "", "is not a CIDR"},
	} {
		r, err := ParseRanges(tc.list)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseRanges(%q): %v", tc.list, err)
		case tc.err == "" && r.String() != tc.want:
			t.Errorf("ParseRanges(%q) = %s, want %s", tc.list, r, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseRanges(%q) = %v, want an error with %q", tc.list, err, tc.err)
		}
	}
}

// TestRangesCheck: any address of any range is accepted, the kept ones of each are refused
// saying which they are, and one outside all is refused naming every range.
func TestRangesCheck(t *testing.T) {
	rs := MustParseRanges(DefaultRanges)
	for _, tc := range []struct{ addr, err string }{
		{"10.66.10.2", ""},
		{"10.66.20.77", ""},
		{"10.66.30.254", ""},
		{"10.66.20.1", "10.66.20.1 is the gateway address of the VM address range 10.66.20.0/24"},
		{"10.66.30.0", "network address of the VM address range 10.66.30.0/24"},
		{"10.66.10.255", "broadcast address of the VM address range 10.66.10.0/24"},
		{"10.66.40.7", "10.66.40.7 is outside the VM address ranges 10.66.10.0/24, 10.66.20.0/24 and 10.66.30.0/24"},
		{"10.66.20", "is not an IPv4 address"},
	} {
		err := rs.Check(tc.addr)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("Check(%s) = %v, want %q", tc.addr, err, tc.err)
		}
	}
	// One range says what it always said.
	one := MustParseRanges("10.66.10.0/24")
	if err := one.Check("10.66.20.77"); err == nil || err.Error() != "10.66.20.77 is outside the VM address range 10.66.10.0/24 (or is its network, gateway or broadcast address)" {
		t.Errorf("one range: %v", err)
	}
	if got := rs.Size(); got != 3*253 {
		t.Errorf("Size = %d, want %d", got, 3*253)
	}
}

// TestRangesGatewayOf: a VM's gateway and prefix length come from the range of its address.
func TestRangesGatewayOf(t *testing.T) {
	rs := MustParseRanges("10.66.10.0/24,10.80.0.0/16")
	for addr, want := range map[string]string{"10.66.10.9": "10.66.10.1/24", "10.80.3.4": "10.80.0.1/16"} {
		r, ok := rs.RangeOf(netip.MustParseAddr(addr))
		if !ok || netip.PrefixFrom(r.Gateway(), r.Bits()).String() != want {
			t.Errorf("RangeOf(%s) = %s %v, want gateway/bits %s", addr, r, ok, want)
		}
	}
	if r, ok := rs.RangeOf(netip.MustParseAddr("10.81.0.1")); ok {
		t.Errorf("RangeOf(10.81.0.1) = %s", r)
	}
}

// TestRangesAfterGoesRound: After walks the first range, then the second, then starts over
// with the first, visiting every address a VM may get once.
func TestRangesAfterGoesRound(t *testing.T) {
	rs := MustParseRanges("10.0.0.0/29,192.168.5.8/29")
	var got []string
	var a netip.Addr
	wraps := 0
	for range rs.Size() + 1 {
		var w bool
		a, w = rs.After(a)
		if w {
			wraps++
		}
		got = append(got, a.String())
	}
	want := "10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6 192.168.5.10 192.168.5.11 192.168.5.12 192.168.5.13 192.168.5.14 10.0.0.2"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	if wraps != 2 { // from nothing, and after the last of the second range
		t.Errorf("wrapped %d times, want 2", wraps)
	}
}

// TestAllocationFillsTheFirstRangeFirst: taking the first free address in After order,
// as the vmip controller does, fills the first range and then goes on in the second.
func TestAllocationFillsTheFirstRangeFirst(t *testing.T) {
	rs := MustParseRanges("10.66.10.0/29,10.66.20.0/24,10.66.30.0/24")
	taken := map[netip.Addr]bool{}
	take := func() netip.Addr {
		var a netip.Addr
		for range rs.Size() {
			a, _ = rs.After(a)
			if !taken[a] {
				taken[a] = true
				return a
			}
		}
		t.Fatal("no free address")
		return a
	}
	for i := range 5 {
		if a := take(); a.String() != "10.66.10."+string(rune('2'+i)) {
			t.Fatalf("address %d = %s, want one of the first range in order", i, a)
		}
	}
	if a := take(); a.String() != "10.66.20.2" {
		t.Fatalf("with the first range full, got %s, want 10.66.20.2", a)
	}
}
