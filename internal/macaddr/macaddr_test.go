package macaddr

import (
	"bytes"
	"crypto/rand"
	"regexp"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"02:00:00:12:34:56", "02:00:00:12:34:56", ""},
		{"5E-E6-19-22-0F-D8", "5e:e6:19:22:0f:d8", ""},
		{"52:54:00:aB:cD:eF", "52:54:00:ab:cd:ef", ""},
		{"01:00:5e:00:00:01", "", "multicast"},
		{"ff:ff:ff:ff:ff:ff", "", "multicast"},
		{"00:00:00:00:00:00", "", "not a usable"},
		{"02:00:00:12:34", "", "six pairs"},
		{"02:00-00:12:34:56", "", "all the same"},
		{"02.00.00.12.34.56", "", "colons"},
		{"02:00:00:12:34:5g", "", `"5g" is not a pair`},
		{"0200.0012.3456xx", "", "not a MAC"},
	} {
		got, err := Parse(c.in)
		if c.err == "" && (err != nil || got != c.want) {
			t.Errorf("Parse(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		if c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("Parse(%q) = %q, %v; want an error with %q", c.in, got, err, c.err)
		}
	}
}

func TestLeaseName(t *testing.T) {
	if n := LeaseName("5E:E6:19:22:0F:D8"); n != "mac-5e-e6-19-22-0f-d8" {
		t.Errorf("LeaseName = %q", n)
	}
	if a, ok := AddressOf("mac-5e-e6-19-22-0f-d8"); !ok || a != "5e:e6:19:22:0f:d8" {
		t.Errorf("AddressOf = %q, %v", a, ok)
	}
	for _, n := range []string{"ip-10-66-10-5", "mac-5e:e6:19:22:0f:d8", "mac-5E-E6-19-22-0F-D8", "mac-5e-e6"} {
		if a, ok := AddressOf(n); ok {
			t.Errorf("AddressOf(%q) = %q, want no address", n, a)
		}
	}
}

func TestPrefix(t *testing.T) {
	seen := map[Prefix]bool{}
	for i := range 2000 {
		id := strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strings.Repeat("y", i/26)
		p := PrefixOf(id)
		if p[0]&0x03 != 0x02 {
			t.Fatalf("PrefixOf(%q) = %s: not locally administered unicast", id, p)
		}
		if p[0] == 0x02 && p[1] == 0x66 {
			t.Fatalf("PrefixOf(%q) = %s: the legacy prefix", id, p)
		}
		seen[p] = true
	}
	if len(seen) < 1900 {
		t.Errorf("2000 clusters got only %d prefixes", len(seen))
	}
	p := PrefixOf("7c5a8d52-1b1e-4b43-9a4f-2f1a0f6b9d11")
	if p != PrefixOf("7c5a8d52-1b1e-4b43-9a4f-2f1a0f6b9d11") {
		t.Error("the prefix of a cluster changes")
	}
	a, err := p.Random(bytes.NewReader([]byte{1, 2, 3}))
	if err != nil || a != p.String()+":01:02:03" || !p.Contains(a) {
		t.Errorf("Random = %q, %v", a, err)
	}
	for range 100 {
		a, _ := p.Random(rand.Reader)
		if _, err := Parse(a); err != nil || !p.Contains(a) {
			t.Fatalf("Random gave %q: %v", a, err)
		}
	}
}

// schema is the pattern the CRD gives spec.address; the CEL rules add unicast and not
// all zeros.
var schema = regexp.MustCompile(`^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$`)

// FuzzParse: Parse never panics; what it accepts the schema admits (a form with one
// separator throughout, which the schema's pattern allows), is unicast and not zero, and
// its canonical form parses to itself and names a lease that gives it back.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"02:00:00:12:34:56", "5E-E6-19-22-0F-D8", "01:00:5e:00:00:01", "00:00:00:00:00:00", "02:00-00:12:34:56", "", "zz:zz:zz:zz:zz:zz", "02:00:00:12:34:567"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error message")
			}
			return
		}
		if !schema.MatchString(s) {
			t.Fatalf("Parse(%q) accepted what the schema refuses", s)
		}
		again, err := Parse(got)
		if err != nil || again != got {
			t.Fatalf("canonical %q parses to %q, %v", got, again, err)
		}
		if got[1] != '0' && got[1] != '2' && got[1] != '4' && got[1] != '6' && got[1] != '8' && got[1] != 'a' && got[1] != 'c' && got[1] != 'e' {
			t.Fatalf("Parse(%q) = %q: not unicast", s, got)
		}
		if a, ok := AddressOf(LeaseName(s)); !ok || a != got {
			t.Fatalf("lease %q of %q gives %q, %v", LeaseName(s), s, a, ok)
		}
	})
}
