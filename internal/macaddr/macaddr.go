package macaddr

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// Parse reads a MAC address as the schema of VirtualMachineMACAddress admits it: six
// pairs of hex digits, separated by colons or dashes, of a unicast address that is not all
// zeros. It returns the address in lower case with colons (5e:e6:19:22:0f:d8).
func Parse(s string) (string, error) {
	m, err := parse(s)
	if err != nil {
		return "", err
	}
	if err := Check(m); err != nil {
		return "", err
	}
	return m.String(), nil
}

func parse(s string) (net.HardwareAddr, error) {
	if len(s) != 17 {
		return nil, fmt.Errorf("%q is not a MAC address: want six pairs of hex digits separated by colons, such as 02:00:00:12:34:56", s)
	}
	m := make(net.HardwareAddr, 6)
	sep := s[2]
	for i := range 6 {
		if i > 0 && s[3*i-1] != sep || sep != ':' && sep != '-' {
			return nil, fmt.Errorf("%q is not a MAC address: separate the six pairs of hex digits with colons (or dashes), all the same", s)
		}
		hi, ok1 := hexDigit(s[3*i])
		lo, ok2 := hexDigit(s[3*i+1])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%q is not a MAC address: %q is not a pair of hex digits", s, s[3*i:3*i+2])
		}
		m[i] = hi<<4 | lo
	}
	return m, nil
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Check says what makes m unusable as a NIC's address: not six octets, a multicast
// address (the lowest bit of the first octet set, broadcast included), or all zeros.
func Check(m net.HardwareAddr) error {
	if len(m) != 6 {
		return fmt.Errorf("a MAC address has six octets, not %d", len(m))
	}
	if m[0]&1 == 1 {
		return fmt.Errorf("%s is a multicast address: a NIC needs a unicast one (the first octet even, such as 02)", m)
	}
	if m.String() == "00:00:00:00:00:00" {
		return errors.New("00:00:00:00:00:00 is not a usable MAC address")
	}
	return nil
}

// LeaseName is the name of the lease of a MAC address (in any form Parse reads; the
// caller checked it): mac-5e-e6-19-22-0f-d8.
func LeaseName(addr string) string {
	return "mac-" + strings.ReplaceAll(strings.ToLower(addr), ":", "-")
}

// AddressOf is the MAC address a lease name stands for; ok is false for a name that is
// no lease name.
func AddressOf(lease string) (string, bool) {
	rest, ok := strings.CutPrefix(lease, "mac-")
	if !ok {
		return "", false
	}
	m, err := parse(rest)
	if err != nil || rest[2] != '-' || strings.ToLower(rest) != rest {
		return "", false
	}
	return m.String(), true
}

// Prefix is the cluster's first three octets of allocated addresses.
type Prefix [3]byte

// legacy is the prefix of the MACs Ferry derived from VMs' addresses (vmnet.GuestMAC).
var legacy = [2]byte{0x02, 0x66}

// PrefixOf is the prefix of the cluster whose identity is cluster (the UID of its
// kube-system namespace): its hash, with the first octet made locally administered and
// unicast, and never the legacy 02:66.
func PrefixOf(cluster string) Prefix {
	h := sha256.Sum256([]byte("ferry-mac-prefix/" + cluster))
	p := Prefix{h[0]&^0x03 | 0x02, h[1], h[2]}
	if p[0] == legacy[0] && p[1] == legacy[1] {
		p[1]++
	}
	return p
}

func (p Prefix) String() string {
	return net.HardwareAddr(p[:]).String()
}

// Contains tells whether addr (canonical) is in the prefix.
func (p Prefix) Contains(addr string) bool {
	return strings.HasPrefix(addr, p.String()+":")
}

// Random is an address of the prefix with three octets read from rnd.
func (p Prefix) Random(rnd io.Reader) (string, error) {
	var b [3]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return "", err
	}
	return net.HardwareAddr{p[0], p[1], p[2], b[0], b[1], b[2]}.String(), nil
}
