package migrationtls

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"time"

	"github.com/ferryvm/ferry/internal/pki"
)

// caLifetime is how long a new migration CA is valid. Replacing it means every node
// renewing its certificate.
const caLifetime = 10 * 365 * 24 * time.Hour

// clockSkew backdates certificates: a node whose clock is a little behind the
// controller's must still take its new certificate.
const clockSkew = 5 * time.Minute

// CA is the migration CA: the controller's signer keeps one in a Secret; tests and
// benchmarks make their own.
type CA struct {
	ca *pki.CA
}

// NewCA makes a CA key pair, both PEM.
func NewCA(now time.Time) (certPEM, keyPEM []byte, err error) {
	ca, err := pki.NewCA("ferry-migration-ca@"+now.UTC().Format("20060102T150405Z"), now.Add(-clockSkew), now.Add(caLifetime))
	if err != nil {
		return nil, nil, err
	}
	return ca.CertPEM, ca.KeyPEM, nil
}

// ParseCA reads a CA key pair as NewCA made it.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	ca, err := pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &CA{ca: ca}, nil
}

// Sign issues node's certificate for req's key, valid for d from now (never beyond the
// CA), and returns it followed by the CA certificate, as the signer puts them in
// status.certificate. The caller has checked req (the signer's policy).
func (c *CA) Sign(req *x509.CertificateRequest, node string, now time.Time, d time.Duration) ([]byte, error) {
	cert, err := c.ca.SignRequest(req, pki.Leaf{
		Subject:     pkix.Name{CommonName: req.Subject.CommonName},
		Hosts:       []string{node},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(d),
	})
	if err != nil {
		return nil, err
	}
	return append(cert, c.ca.CertPEM...), nil
}

// CertPEM is the CA's certificate.
func (c *CA) CertPEM() []byte { return c.ca.CertPEM }

// NodeCredentials makes node's key and has c sign its certificate, valid for d from now:
// credentials as an agent gets them from the signer, for tests and benchmarks.
func (c *CA) NodeCredentials(node string, now time.Time, d time.Duration) (*Credentials, error) {
	keyPEM, csrPEM, err := NewRequest(node)
	if err != nil {
		return nil, err
	}
	req, err := pki.ParseRequest(csrPEM)
	if err != nil {
		return nil, err
	}
	chain, err := c.Sign(req, node, now, d)
	if err != nil {
		return nil, err
	}
	first, _ := pem.Decode(chain)
	return Parse(pem.EncodeToMemory(first), keyPEM, c.ca.CertPEM)
}
