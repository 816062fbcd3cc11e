package controlplane

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// TestCertsKeptAcrossStarts: a restart on the same directory keeps the CA and every
// certificate that still fits, and reissues one whose hosts changed. A CA whose key was
// written as SEC 1 ("EC PRIVATE KEY", by hand or an older tool) is read too.
func TestCertsKeptAcrossStarts(t *testing.T) {
	dir := t.TempDir()
	ca, err := loadOrCreateCA(dir, "ferry-ca")
	if err != nil {
		t.Fatal(err)
	}
	again, err := loadOrCreateCA(dir, "ferry-ca")
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("reloading the CA: %v (same CA: %v)", err, err == nil && again.Cert.Equal(ca.Cert))
	}
	spec := leafSpec{commonName: "kube-apiserver", hosts: []string{"127.0.0.1", "", "localhost"}, server: true}
	certFile, _, err := ca.ensurePair(dir, "apiserver", spec)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(certFile)
	if _, _, err := again.ensurePair(dir, "apiserver", spec); err != nil {
		t.Fatal(err)
	}
	if kept, _ := os.ReadFile(certFile); !bytes.Equal(kept, first) {
		t.Error("a certificate that still fits was reissued")
	}
	spec.hosts = append(spec.hosts, "10.0.0.1")
	if _, _, err := again.ensurePair(dir, "apiserver", spec); err != nil {
		t.Fatal(err)
	}
	if renewed, _ := os.ReadFile(certFile); bytes.Equal(renewed, first) {
		t.Error("a certificate without a wanted host was kept")
	}
	// A serving certificate is not taken for a client one of the same name.
	if !ca.pairUsable(certFile, filepath.Join(dir, "apiserver.key"), spec) {
		t.Error("the renewed serving certificate is not usable")
	}
	if ca.pairUsable(certFile, filepath.Join(dir, "apiserver.key"), leafSpec{commonName: "kube-apiserver", client: true}) {
		t.Error("a serving certificate passed for a client one")
	}

	sec1, err := x509.MarshalECPrivateKey(ca.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), 0o600); err != nil {
		t.Fatal(err)
	}
	if sec1CA, err := loadOrCreateCA(dir, "ferry-ca"); err != nil || !sec1CA.Cert.Equal(ca.Cert) {
		t.Errorf("a CA with an EC PRIVATE KEY: %v", err)
	}
	// A key that is not the CA's is refused rather than signing certificates nobody trusts.
	other, err := loadOrCreateCA(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), other.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateCA(dir, "ferry-ca"); err == nil {
		t.Error("a CA certificate with another key was accepted")
	}
}
