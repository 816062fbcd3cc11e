package netguard

import (
	"net/netip"
	"testing"
)

// FuzzRule: any string an operator (or a chart value) gives either parses into a rule
// that matches what it says, or is refused; nothing panics.
func FuzzRule(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "::1", "[::1]:8080", "127.0.0.1:2379", "::ffff:1.2.3.4", "1.2.3.4/0", "fe80::1%eth0", "x"} {
		f.Add(s, "10.1.2.3:80")
	}
	f.Fuzz(func(t *testing.T, rule, dest string) {
		r, err := ParseRule(rule)
		if err != nil {
			return
		}
		if !r.Prefix.IsValid() {
			t.Fatalf("%q parsed to an invalid prefix", rule)
		}
		d, err := netip.ParseAddrPort(dest)
		if err != nil {
			return
		}
		p := &Policy{Denied: []Rule{r}}
		if r.matches(netip.AddrPortFrom(d.Addr().Unmap().WithZone(""), d.Port())) != (p.Check(d) != nil) {
			t.Fatalf("rule %q and %q: matches and Check disagree", rule, dest)
		}
	})
}
