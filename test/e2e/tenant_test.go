package e2e

import (
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/ferryvm/ferry/test/tenant"
)

// TestTenantIsolation: a user with `edit` in its own namespace, on its own token, tries
// every way out that docs/threat-model.md lists; each is refused or harmless, and its VM
// runs on untouched.
func TestTenantIsolation(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(cl.stateDir, "control-plane", "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	tenant.Run(t, tenant.Env{Admin: cfg, Image: "ferry-guest", StandIn: true, Node: "node-1"})
}
