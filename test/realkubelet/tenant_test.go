package realkubelet

import (
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/ferryvm/ferry/internal/up"
	"github.com/ferryvm/ferry/test/tenant"
)

// TestTenantIsolation: the tenant-isolation suite (test/tenant) on deploy/base as installed
// on real kubelets: its RBAC, its admission policies, its controller's ServiceAccount exempt
// from Pod Security (ferry up's apiserver is configured as the README tells an operator to).
func TestTenantIsolation(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", up.KubeconfigPath(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	tenant.Run(t, tenant.Env{Admin: cfg, Image: up.SampleImage})
}
