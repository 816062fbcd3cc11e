package migrationtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/pki"
)

// ErrNoCredentials says a node has no migration certificate (yet).
var ErrNoCredentials = errors.New("no migration certificate")

// Credentials are a node's migration certificate, its private key and the CA that signs
// every node's: what QEMU needs at either end of a migration.
type Credentials struct {
	CertPEM, KeyPEM, CAPEM []byte
	// Cert is CertPEM's first certificate, Roots the CAs of CAPEM.
	Cert  *x509.Certificate
	Roots *x509.CertPool
}

// Parse checks that certPEM's certificate belongs to keyPEM's key and that caPEM holds
// at least one CA certificate.
func Parse(certPEM, keyPEM, caPEM []byte) (*Credentials, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate and key: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA certificate")
	}
	return &Credentials{CertPEM: certPEM, KeyPEM: keyPEM, CAPEM: caPEM, Cert: cert, Roots: roots}, nil
}

// Check tells whether the credentials serve node's migrations at now: the certificate is
// node's ("" skips that check), signed by the CA for both TLS roles, and valid.
func (c *Credentials) Check(node string, now time.Time) error {
	cert := c.Cert
	if node != "" && cert.Subject.CommonName != NodeCN(node) {
		return fmt.Errorf("the certificate is for %q, not node %s", cert.Subject.CommonName, node)
	}
	err := pki.VerifyLeaf(cert, c.Roots, now, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth})
	if err != nil && !errors.Is(err, pki.ErrOutsideValidity) {
		return fmt.Errorf("the certificate does not verify against the migration CA: %w", err)
	}
	return err
}

// Load reads the credentials of a node's directory (as Write left them). It returns an
// error wrapping ErrNoCredentials when there are none.
func Load(dir string) (*Credentials, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s", ErrNoCredentials, dir)
		}
		return b, err
	}
	var files [3][]byte
	for i, name := range []string{hypervisor.TLSServerCertFile, hypervisor.TLSServerKeyFile, hypervisor.TLSCACertFile} {
		b, err := read(name)
		if err != nil {
			return nil, err
		}
		files[i] = b
	}
	c, err := Parse(files[0], files[1], files[2])
	if err != nil {
		return nil, fmt.Errorf("migration credentials in %s: %w", dir, err)
	}
	return c, nil
}

// Write keeps c in dir (0700, files 0600) in QEMU's tls-creds-x509 layout, for both the
// server (target) and client (source) roles.
func Write(dir string, c *Credentials) error {
	return hypervisor.WriteTLSDir(dir, c.CAPEM, c.CertPEM, c.KeyPEM)
}
