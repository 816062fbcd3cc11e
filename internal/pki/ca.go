package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"
)

// CA is a certificate authority: its certificate and signing key, and both as PEM. The
// PEM is what was read (ParseCA) or made (NewCA), so writing it back changes nothing.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed CA named commonName, valid from notBefore to notAfter, with a
// new key. Every Ferry CA has the same shape: it signs leaves only (path length zero).
func NewCA(commonName string, notBefore, notAfter time.Time) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	skid, err := keyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: EncodeCert(der), KeyPEM: keyPEM}, nil
}

// keyID identifies a public key (RFC 5280's subject key identifier; this is its method 1
// with SHA-256, truncated to SHA-1's 20 bytes, as RFC 7093 allows).
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// ParseCA reads a CA from its certificate and key (PEM): certPEM must hold exactly one
// certificate, a CA's, and keyPEM that certificate's key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := ParseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 || !certs[0].IsCA {
		return nil, fmt.Errorf("want one CA certificate, got %d certificates (CA: %v)", len(certs), len(certs) == 1 && certs[0].IsCA)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !samePublicKey(key.Public(), certs[0].PublicKey) {
		return nil, errors.New("the key is not the certificate's")
	}
	return &CA{Cert: certs[0], Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// Roots is a pool holding the CA's certificate alone, to verify its leaves.
func (ca *CA) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf says what certificate a CA signs.
type Leaf struct {
	Subject pkix.Name
	// Hosts are DNS names and IP addresses, in the order the certificate lists them;
	// duplicates and empty strings are dropped.
	Hosts []string
	// KeyUsage defaults to digital signature.
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	// NotAfter is cut to the CA's own: a leaf that outlived its CA would stop being
	// trusted when the CA leaves the trust bundles, so it ends with it and is renewed
	// before.
	NotBefore, NotAfter time.Time
}

// Issue makes a new key and signs a certificate for it; both are returned as PEM.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	if certPEM, err = ca.Sign(l, key.Public()); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = EncodeKey(key); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// SignRequest signs a certificate for the key of req, which must be signed by that key.
// Only req's key is taken: l says everything else, as the caller's policy decided it from
// the request.
func (ca *CA) SignRequest(req *x509.CertificateRequest, l Leaf) ([]byte, error) {
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the request is not signed by its own key: %w", err)
	}
	return ca.Sign(l, req.PublicKey)
}

// Sign signs a certificate for pub as l says (PEM).
func (ca *CA) Sign(l Leaf, pub crypto.PublicKey) ([]byte, error) {
	if ca.Key == nil {
		return nil, errors.New("the CA has no key")
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	usage := l.KeyUsage
	if usage == 0 {
		usage = x509.KeyUsageDigitalSignature
	}
	dns, ips := SplitHosts(l.Hosts)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               l.Subject,
		NotBefore:             l.NotBefore,
		NotAfter:              minTime(l.NotAfter, ca.Cert.NotAfter),
		KeyUsage:              usage,
		ExtKeyUsage:           slices.Clone(l.ExtKeyUsage),
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return EncodeCert(der), nil
}

// SplitHosts sorts hosts into DNS names and IP addresses, as a certificate holds them,
// keeping their order and dropping duplicates and empty strings.
func SplitHosts(hosts []string) (dns []string, ips []net.IP) {
	seen := map[string]bool{}
	for _, h := range hosts {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// Hosts are the DNS names and IP addresses c is for, sorted, to compare with wanted ones.
func Hosts(c *x509.Certificate) []string {
	out := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	slices.Sort(out)
	return out
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
