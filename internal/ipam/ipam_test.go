package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRange(t *testing.T) {
	r, err := ParseRange("10.66.10.0/24")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		ok   bool
	}{
		{"10.66.10.14", true},
		{"10.66.10.2", true},
		{"10.66.10.254", true},
		{"10.66.10.0", false},
		{"10.66.10.1", false},
		{"10.66.10.255", false},
		{"10.66.11.3", false},
		{"nonsense", false},
	}
	for _, tc := range tests {
		if err := r.Check(tc.addr); (err == nil) != tc.ok {
			t.Errorf("Check(%s) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}

// TestAfterGoesRound: from nothing, After visits every address a VM may get once, in
// order, and then starts again; Size counts them.
func TestAfterGoesRound(t *testing.T) {
	r, _ := ParseRange("10.0.0.0/29")
	var got []string
	var a netip.Addr
	for range r.Size() + 1 {
		a, _ = r.After(a)
		got = append(got, a.String())
	}
	want := []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.2"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, wrapped := r.After(netip.MustParseAddr("10.0.0.6")); !wrapped {
		t.Error("After the last address did not wrap")
	}
}

func TestLeaseNameRoundTrip(t *testing.T) {
	n := LeaseName("10.66.10.14")
	if n != "ip-10-66-10-14" {
		t.Fatalf("LeaseName = %s", n)
	}
	a, ok := AddressOf(n)
	if !ok || a != "10.66.10.14" {
		t.Fatalf("AddressOf(%s) = %s %v", n, a, ok)
	}
	if _, ok := AddressOf("something"); ok {
		t.Fatal("AddressOf accepted a foreign name")
	}
}

func TestParseRangeErrors(t *testing.T) {
	for _, c := range []string{"10.66.10.0/30", "fd00::/64", "x"} {
		if _, err := ParseRange(c); err == nil {
			t.Errorf("ParseRange(%s) accepted", c)
		}
	}
}
