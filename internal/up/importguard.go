package up

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/ferryvm/ferry/internal/netguard"
)

// importGuardArgs are the controller's --import-allowed-networks and
// --import-denied-networks under ferry up. Images here are served from loopback (ferry up's
// registry, the README's and the tests' file servers), so loopback is allowed, but for the
// ports of ferry up's own services: the apiserver, etcd (plain HTTP), the controller's
// metrics, health and webhooks, and the agents' peer port. The nodes' network is denied
// (each node's agent and launchers listen there) but for the port where --kubelet=real
// serves the sample image on the bridge.
func importGuardArgs(apiPort int, etcdURL string, netNS bool) []string {
	allowed := []string{"127.0.0.0/8", "::1/128"}
	denied := append([]string{}, netguard.DefaultDenied...)
	for _, p := range []int{apiPort, metricsPort(apiPort), metricsPort(apiPort) + 1, webhookPort(apiPort), peerPort(apiPort)} {
		denied = append(denied, fmt.Sprintf("127.0.0.1:%d", p))
	}
	if u, err := url.Parse(etcdURL); err == nil {
		if ap, err := netip.ParseAddrPort(u.Host); err == nil {
			denied = append(denied, ap.String())
		}
	}
	if netNS {
		denied = append(denied, netip.PrefixFrom(netip.MustParseAddr(bridgeAddr), nodeSubnet).Masked().String())
		allowed = append(allowed, fmt.Sprintf("%s:%d", bridgeAddr, imagePort(apiPort)))
	}
	return []string{"--import-allowed-networks=" + strings.Join(allowed, ","), "--import-denied-networks=" + strings.Join(denied, ",")}
}
