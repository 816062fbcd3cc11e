package webhookcert

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"time"

	"github.com/ferryvm/ferry/internal/pki"
)

// backdate is how long before its issue a certificate's validity starts: an apiserver whose
// clock is a little behind the controller's still accepts a certificate issued just now.
// The schedule counts a certificate's life from its issue (NotBefore + backdate).
const backdate = 5 * time.Minute

// newAuthority makes a self-signed CA valid for validity from now.
func newAuthority(now time.Time, validity time.Duration) (pki.CA, error) {
	// The time in the name tells CAs apart in a bundle and in `openssl x509` output.
	ca, err := pki.NewCA(fmt.Sprintf("ferry-webhook-ca@%d", now.Unix()), now.Add(-backdate), now.Add(validity))
	if err != nil {
		return pki.CA{}, err
	}
	return *ca, nil
}

// parseAuthority reads a CA certificate and its key (PEM) and checks that they belong together.
func parseAuthority(certPEM, keyPEM []byte) (pki.CA, error) {
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		return pki.CA{}, err
	}
	return *ca, nil
}

// issueServing makes a serving certificate for hosts (DNS names or IP addresses) signed by
// ca, valid for validity from now but never beyond ca itself (pki.Leaf), and its new key.
func issueServing(ca pki.CA, hosts []string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.Issue(pki.Leaf{
		Subject:     pkix.Name{CommonName: hosts[0]},
		Hosts:       hosts,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(validity),
	})
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
