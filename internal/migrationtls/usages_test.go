package migrationtls

import (
	"slices"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
)

func TestUsagesAreTheAPIs(t *testing.T) {
	want := []certificatesv1.KeyUsage{
		certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment,
		certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth,
	}
	if got := Usages[certificatesv1.KeyUsage](); !slices.Equal(got, want) {
		t.Errorf("Usages %q, want %q", got, want)
	}
}
