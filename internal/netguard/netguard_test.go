package netguard

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	p, err := New([]string{"127.0.0.0/8", "10.1.0.0/16", "192.168.1.5:8080"}, append(DefaultDenied, "127.0.0.1:2379", "10.0.0.0/8", "192.168.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dest string
		ok   bool
	}{
		{"127.0.0.1:8000", true},               // allowed /8 beats the denied /8 (same length: deny wins, so see next)
		{"127.0.0.1:2379", false},              // one denied port inside the allowed loopback
		{"169.254.169.254:80", false},          // a cloud's metadata service
		{"[fe80::1]:80", false},                // IPv6 link-local
		{"[::ffff:169.254.169.254]:80", false}, // IPv4-mapped: the same address
		{"[::1]:80", false},
		{"[fe80::1%eth0]:80", false}, // a zone does not take an address out of its network
		{"10.2.3.4:443", false},      // denied /8
		{"10.1.3.4:443", true},       // allowed /16 inside it
		{"192.168.1.5:8080", true},   // one allowed port
		{"192.168.1.5:8081", false},
		{"93.184.216.34:443", true}, // no rule: allowed
		{"0.0.0.0:80", false},
	} {
		err := p.Check(netip.MustParseAddrPort(c.dest))
		if (err == nil) != c.ok {
			t.Errorf("%s: allowed %v, want %v (%v)", c.dest, err == nil, c.ok, err)
		}
	}
	// A port denied inside an allowed network stays denied, in whichever list order.
	p2, _ := New([]string{"127.0.0.0/8", "127.0.0.1:9"}, []string{"127.0.0.1:2379"})
	if p2.Check(netip.MustParseAddrPort("127.0.0.1:2379")) == nil || p2.Check(netip.MustParseAddrPort("127.0.0.1:9")) != nil {
		t.Error("a port rule does not beat its network's rule")
	}
}

func TestParseRuleErrors(t *testing.T) {
	for _, s := range []string{"", "localhost", "10.0.0.0/33", "10.0.0.1:0", "10.0.0.1:http", "[::1]"} {
		if _, err := ParseRule(s); err == nil {
			t.Errorf("%q parsed", s)
		} else if s != "" && !strings.Contains(err.Error(), "CIDR") && !strings.Contains(err.Error(), "port") {
			t.Errorf("%q: the message does not say what to write: %v", s, err)
		}
	}
}

// TestDialRefused: the guard applies to the address dialled, whatever the URL says: a
// name that resolves to loopback, and a redirect from an allowed server to a denied one.
func TestDialRefused(t *testing.T) {
	denied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("secret")) }))
	defer denied.Close()
	deniedAddr := netip.MustParseAddrPort(denied.Listener.Addr().String())
	allowed := httptest.NewServer(http.RedirectHandler(denied.URL+"/x", http.StatusFound))
	defer allowed.Close()
	allowedAddr := netip.MustParseAddrPort(allowed.Listener.Addr().String())

	p, err := New([]string{allowedAddr.String()}, DefaultDenied)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: p.Dialer(&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	c := &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, u := range []string{
		"http://localhost:" + strings.TrimPrefix(denied.URL, "http://127.0.0.1:") + "/",
		denied.URL,
		allowed.URL, // redirects to the denied one
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: fetched (%s)", u, resp.Status)
			continue
		}
		r, ok := IsRefused(err)
		if !ok || r.Dest.Port() != deniedAddr.Port() {
			t.Errorf("%s: %v, want a refusal of port %d", u, err, deniedAddr.Port())
			continue
		}
		if !strings.Contains(err.Error(), "--import-allowed-networks") {
			t.Errorf("the refusal does not say what to change: %v", err)
		}
	}
}

func TestDeniedHosts(t *testing.T) {
	p, _ := New([]string{"10.0.0.0/8", "10.1.2.3:8080"}, DefaultDenied)
	p.DeniedHosts = func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("10.1.2.3")} }
	p.DeniedHostsWhat = "a node's address"
	err := p.Check(netip.MustParseAddrPort("10.1.2.3:10250"))
	if err == nil || !strings.Contains(err.Error(), "a node's address") {
		t.Errorf("a node's kubelet port: %v", err)
	}
	if err := p.Check(netip.MustParseAddrPort("10.1.2.3:8080")); err != nil {
		t.Errorf("a port allowed on a node's address: %v", err)
	}
	if err := p.Check(netip.MustParseAddrPort("10.1.2.4:80")); err != nil {
		t.Errorf("another address of an allowed network: %v", err)
	}
}
