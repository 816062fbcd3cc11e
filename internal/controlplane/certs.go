package controlplane

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/ferryvm/ferry/internal/pki"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 5 * 365 * 24 * time.Hour
	// backdate starts a certificate's validity before its issue, for a client whose
	// clock is behind.
	backdate = time.Hour
)

// authority is the cluster CA, able to sign leaf certificates.
type authority struct {
	*pki.CA
}

// loadOrCreateCA reads ca.crt/ca.key from dir or creates them.
func loadOrCreateCA(dir, commonName string) (*authority, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	certPEM, errC := os.ReadFile(certPath)
	keyPEM, errK := os.ReadFile(keyPath)
	if errC == nil && errK == nil {
		ca, err := pki.ParseCA(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("parse %s and %s: %w", certPath, keyPath, err)
		}
		return &authority{ca}, nil
	}
	now := time.Now()
	ca, err := pki.NewCA(commonName, now.Add(-backdate), now.Add(caValidity))
	if err != nil {
		return nil, err
	}
	if err := writeFile(keyPath, ca.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(certPath, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return &authority{ca}, nil
}

// leafSpec describes a certificate to issue.
type leafSpec struct {
	commonName string
	orgs       []string
	hosts      []string // DNS names and IP addresses (serving certs)
	client     bool
	server     bool
}

// usages are the certificate's extended key usages.
func (s leafSpec) usages() []x509.ExtKeyUsage {
	var u []x509.ExtKeyUsage
	if s.client {
		u = append(u, x509.ExtKeyUsageClientAuth)
	}
	if s.server {
		u = append(u, x509.ExtKeyUsageServerAuth)
	}
	return u
}

// issue signs a fresh leaf certificate with a fresh key.
func (a *authority) issue(s leafSpec) (certPEM, keyPEM []byte, err error) {
	now := time.Now()
	return a.Issue(pki.Leaf{
		Subject:     pkix.Name{CommonName: s.commonName, Organization: s.orgs},
		Hosts:       s.hosts,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: s.usages(),
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(leafValidity),
	})
}

// ensurePair writes name.crt/name.key into dir unless a pair exists that is
// still valid, signed by a and (for serving certs) covers all wanted hosts.
func (a *authority) ensurePair(dir, name string, s leafSpec) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if a.pairUsable(certFile, keyFile, s) {
		return certFile, keyFile, nil
	}
	certPEM, keyPEM, err := a.issue(s)
	if err != nil {
		return "", "", fmt.Errorf("issue %s certificate: %w", name, err)
	}
	if err := writeFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFile(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// pairUsable tells whether certFile is s's certificate (name, usages, hosts), verifies
// against a and has more than 30 days to live, and keyFile is there.
func (a *authority) pairUsable(certFile, keyFile string, s leafSpec) bool {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return false
	}
	if _, err := os.Stat(keyFile); err != nil {
		return false
	}
	cert, err := pki.ParseCert(certPEM)
	if err != nil || cert.Subject.CommonName != s.commonName {
		return false
	}
	now := time.Now()
	if now.Add(30 * 24 * time.Hour).After(cert.NotAfter) {
		return false
	}
	hosts := slices.DeleteFunc(slices.Clone(s.hosts), func(h string) bool { return h == "" })
	return pki.VerifyLeaf(cert, a.Roots(), now, s.usages(), hosts...) == nil
}

// ensureSAKey creates the service-account signing key pair (sa.key, sa.pub)
// once; tokens issued before a restart stay valid.
func ensureSAKey(dir string) (privFile, pubFile string, err error) {
	privFile, pubFile = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if _, err1 := os.Stat(privFile); err1 == nil {
		if _, err2 := os.Stat(pubFile); err2 == nil {
			return privFile, pubFile, nil
		}
	}
	key, err := pki.NewKey()
	if err != nil {
		return "", "", err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return "", "", err
	}
	pubPEM, err := pki.EncodePublicKey(key.Public())
	if err != nil {
		return "", "", err
	}
	if err := writeFile(privFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFile(pubFile, pubPEM, 0o644); err != nil {
		return "", "", err
	}
	return privFile, pubFile, nil
}

// writeFile writes data atomically (temp file + rename).
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// IssueServingCert writes name.crt/name.key into the control plane's PKI directory: a
// serving certificate for hosts signed by the cluster CA (whose PEM is CAData), kept
// while it is valid. The Ferry controller's webhooks show it to the apiserver.
func (c *ControlPlane) IssueServingCert(name string, hosts ...string) (dir, certName, keyName string, err error) {
	dir = filepath.Dir(c.CAFile)
	if _, _, err := c.ca.ensurePair(dir, name, leafSpec{commonName: name, hosts: hosts, server: true}); err != nil {
		return "", "", "", err
	}
	return dir, name + ".crt", name + ".key", nil
}
