package up

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/internal/netguard"
)

func TestImportGuardArgs(t *testing.T) {
	const api = 16443
	args := importGuardArgs(api, "http://127.0.0.1:39123", true)
	var allowed, denied []string
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "--import-allowed-networks":
			allowed = strings.Split(v, ",")
		case "--import-denied-networks":
			denied = strings.Split(v, ",")
		}
	}
	p, err := netguard.New(allowed, denied)
	if err != nil {
		t.Fatal(err)
	}
	for dest, ok := range map[string]bool{
		fmt.Sprintf("127.0.0.1:%d", registryPort(api)): true, // ferry up's registry
		"127.0.0.1:45000": true, // a file server of the README or a test
		fmt.Sprintf("10.66.0.1:%d", imagePort(api)):     true,  // --kubelet=real's sample image
		fmt.Sprintf("127.0.0.1:%d", api):                false, // the apiserver
		"127.0.0.1:39123":                               false, // etcd
		fmt.Sprintf("127.0.0.1:%d", metricsPort(api)):   false,
		fmt.Sprintf("127.0.0.1:%d", metricsPort(api)+1): false,
		fmt.Sprintf("127.0.0.1:%d", webhookPort(api)):   false,
		fmt.Sprintf("127.0.0.1:%d", peerPort(api)):      false,
		"10.66.0.11:10250":                              false, // a node
		"169.254.169.254:80":                            false,
	} {
		if got := p.Check(netip.MustParseAddrPort(dest)) == nil; got != ok {
			t.Errorf("%s: allowed %v, want %v", dest, got, ok)
		}
	}
}
