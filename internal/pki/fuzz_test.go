package pki

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"testing"
	"time"
)

// FuzzParseRequest feeds ParseRequest what a node (or anyone who may create a
// CertificateSigningRequest) could send. Whatever it accepts is one well-formed request
// signed by its own key, which a CA can sign.
func FuzzParseRequest(f *testing.F) {
	key := mustKey(f)
	good, err := NewRequest(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:ferry-node:node-1"}, DNSNames: []string{"node-1"}}, key)
	if err != nil {
		f.Fatal(err)
	}
	ca := mustCA(f, "ca", t0, t0.Add(time.Hour))
	block, _ := pem.Decode(good)
	f.Add(good)
	f.Add(append(append([]byte{}, good...), good...))
	f.Add(ca.CertPEM)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: block.Bytes[:len(block.Bytes)/2]}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ParseRequest(data)
		if err != nil {
			if req != nil {
				t.Fatal("a request returned with an error")
			}
			return
		}
		if err := req.CheckSignature(); err != nil {
			t.Fatalf("accepted a request with a bad signature: %v", err)
		}
		// The request is the one block of the input.
		b, rest := pem.Decode(data)
		if b == nil || !bytes.Equal(b.Bytes, req.Raw) || len(bytes.TrimSpace(rest)) > 0 {
			t.Fatal("accepted more than one request block")
		}
		if _, err := ca.SignRequest(req, Leaf{Subject: req.Subject, NotBefore: t0, NotAfter: t0.Add(time.Hour)}); err != nil {
			// Keys x509 can parse but cannot certify (e.g. unusual curves) may fail here,
			// as an error, never a panic.
			t.Logf("signing an accepted request: %v", err)
		}
	})
}

// FuzzParsePEM feeds the readers of stored certificates and keys (state directories,
// Secrets) arbitrary bytes: they may refuse them, never panic, and what they accept is
// consistent.
func FuzzParsePEM(f *testing.F) {
	ca := mustCA(f, "ca", t0, t0.Add(time.Hour))
	leafPEM, leafKey, err := ca.Issue(Leaf{Hosts: []string{"a", "127.0.0.1"}, NotBefore: t0, NotAfter: t0.Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM, ca.KeyPEM)
	f.Add(append(append([]byte{}, leafPEM...), ca.CertPEM...), leafKey)
	f.Add(ca.KeyPEM, ca.CertPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		certs, bundleErr := ParseCerts(certPEM)
		for _, c := range certs {
			_ = Hosts(c)
		}
		// A later broken certificate fails the bundle, not its first one.
		if c, err := ParseCert(certPEM); err == nil && bundleErr == nil && (len(certs) == 0 || !c.Equal(certs[0])) {
			t.Fatal("ParseCert read a certificate ParseCerts did not")
		}
		if k, err := ParseKey(keyPEM); err == nil && k.Public() == nil {
			t.Fatal("a key without a public key")
		}
		got, err := ParseCA(certPEM, keyPEM)
		if err != nil {
			return
		}
		if !got.Cert.IsCA || !samePublicKey(got.Key.Public(), got.Cert.PublicKey) {
			t.Fatal("ParseCA accepted a certificate that is not a CA's or a key that is not its")
		}
	})
}
