package controller

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/ferryvm/ferry/internal/netguard"
)

// TestImportsDenyNodeAddresses: with --import-deny-node-addresses, an import may not reach
// a node's address (its kubelet, agent, host services), as the nodes are at the time, but
// a loopback node's (ferry up without network namespaces) and a port allowed by address.
func TestImportsDenyNodeAddresses(t *testing.T) {
	node := func(name string, addrs ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		for _, a := range addrs {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		return n
	}
	c := fake.NewClientBuilder().WithScheme(NewScheme()).WithObjects(node("a", "10.0.0.5", "fd00::5"), node("b", "127.0.0.1")).Build()
	p, err := netguard.New([]string{"10.0.0.5:8443"}, netguard.DefaultDenied)
	if err != nil {
		t.Fatal(err)
	}
	p.DeniedHosts, p.DeniedHostsWhat = nodeAddresses(c), "a node's address (--import-deny-node-addresses)"
	for dest, ok := range map[string]bool{
		"10.0.0.5:10250":   false,
		"[fd00::5]:443":    false,
		"10.0.0.5:8443":    true, // allowed by address and port
		"10.0.0.6:80":      true,
		"127.0.0.1:8080":   false, // loopback: denied by the defaults, not as a node
		"93.184.216.34:80": true,
	} {
		err := p.Check(netip.MustParseAddrPort(dest))
		if (err == nil) != ok {
			t.Errorf("%s: allowed %v, want %v (%v)", dest, err == nil, ok, err)
		}
		if err != nil && strings.HasPrefix(dest, "10.0.0.5") && !strings.Contains(err.Error(), "a node's address") {
			t.Errorf("%s: the refusal does not say it is a node's: %v", dest, err)
		}
	}
}
