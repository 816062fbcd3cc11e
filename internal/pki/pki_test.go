package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mustCA(t testing.TB, name string, notBefore, notAfter time.Time) *CA {
	t.Helper()
	ca, err := NewCA(name, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewCA(t *testing.T) {
	ca := mustCA(t, "test-ca", t0, t0.Add(time.Hour))
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: CA %v, valid %v, max path %d (zero %v); want a CA for leaves only", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature; c.KeyUsage != want {
		t.Errorf("key usage %b, want %b", c.KeyUsage, want)
	}
	if c.Subject.CommonName != "test-ca" || !c.NotBefore.Equal(t0) || !c.NotAfter.Equal(t0.Add(time.Hour)) {
		t.Errorf("subject %q, valid %s to %s", c.Subject.CommonName, c.NotBefore, c.NotAfter)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if len(c.SubjectKeyId) != 20 {
		t.Errorf("subject key id of %d bytes, want 20", len(c.SubjectKeyId))
	}
	if _, ok := ca.Key.(*ecdsa.PrivateKey); !ok {
		t.Errorf("key is a %T, want ECDSA", ca.Key)
	}
	if other := mustCA(t, "test-ca", t0, t0.Add(time.Hour)); other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two CAs have the same serial number")
	}
	// What NewCA made reads back as it was, to the byte.
	got, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(c) || !bytes.Equal(got.CertPEM, ca.CertPEM) || !bytes.Equal(got.KeyPEM, ca.KeyPEM) {
		t.Error("ParseCA read back a different CA")
	}
}

func TestParseCA(t *testing.T) {
	ca := mustCA(t, "a", t0, t0.Add(time.Hour))
	other := mustCA(t, "b", t0, t0.Add(time.Hour))
	leafPEM, leafKeyPEM, err := ca.Issue(Leaf{Subject: pkix.Name{CommonName: "leaf"}, NotBefore: t0, NotAfter: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	key := ca.Key.(*ecdsa.PrivateKey)
	sec1DER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER})
	for _, tc := range []struct {
		name          string
		cert, key     []byte
		says          string // "" accepted
		keepsKeyBytes bool
	}{
		{"PKCS #8 key", ca.CertPEM, ca.KeyPEM, "", true},
		{"SEC 1 key (EC PRIVATE KEY)", ca.CertPEM, sec1, "", true},
		{"another CA's key", ca.CertPEM, other.KeyPEM, "not the certificate's", false},
		{"a bundle of two", append(slices.Clone(ca.CertPEM), other.CertPEM...), ca.KeyPEM, "want one CA certificate", false},
		{"no certificate", nil, ca.KeyPEM, "want one CA certificate", false},
		{"a leaf, not a CA", leafPEM, leafKeyPEM, "want one CA certificate", false},
		{"no key", ca.CertPEM, nil, "no PEM key", false},
		{"a certificate for a key", ca.CertPEM, ca.CertPEM, `"CERTIFICATE" PEM block, not a private key`, false},
	} {
		got, err := ParseCA(tc.cert, tc.key)
		if tc.says == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			} else if tc.keepsKeyBytes && !bytes.Equal(got.KeyPEM, tc.key) {
				t.Errorf("%s: the key's PEM changed on reading", tc.name)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.says)
		}
	}
}

func TestParseKey(t *testing.T) {
	ec := mustKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	must := func(der []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	pkcs8 := func(k any) []byte { return must(x509.MarshalPKCS8PrivateKey(k)) }
	ecDER := must(x509.MarshalECPrivateKey(ec))
	for _, tc := range []struct {
		name string
		data []byte
		want crypto.PublicKey // nil: refused
	}{
		{"ECDSA, PKCS #8", block("PRIVATE KEY", pkcs8(ec)), ec.Public()},
		{"ECDSA, SEC 1", block("EC PRIVATE KEY", ecDER), ec.Public()},
		{"RSA, PKCS #1", block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), rsaKey.Public()},
		{"RSA, PKCS #8", block("PRIVATE KEY", pkcs8(rsaKey)), rsaKey.Public()},
		{"Ed25519, PKCS #8", block("PRIVATE KEY", pkcs8(edKey)), edKey.Public()},
		{"a public key", block("PUBLIC KEY", must(x509.MarshalPKIXPublicKey(ec.Public()))), nil},
		{"garbage DER", block("PRIVATE KEY", []byte{1, 2, 3}), nil},
		{"SEC 1 DER labelled PKCS #8", block("PRIVATE KEY", ecDER), nil},
		{"not PEM", []byte("hello"), nil},
		{"empty", nil, nil},
	} {
		got, err := ParseKey(tc.data)
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("%s: accepted", tc.name)
		case tc.want != nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != nil && !samePublicKey(got.Public(), tc.want):
			t.Errorf("%s: read another key", tc.name)
		}
	}
	// EncodeKey writes what ParseKey reads.
	enc, err := EncodeKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(enc); b == nil || b.Type != "PRIVATE KEY" {
		t.Errorf("EncodeKey wrote %q, want a PRIVATE KEY block", enc)
	}
	if got, err := ParseKey(enc); err != nil || !samePublicKey(got.Public(), ec.Public()) {
		t.Errorf("EncodeKey's output reads back as another key: %v", err)
	}
}

func TestEncodePublicKey(t *testing.T) {
	k := mustKey(t)
	enc, err := EncodePublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(enc)
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("wrote %q, want a PUBLIC KEY block", enc)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil || !samePublicKey(pub, k.Public()) {
		t.Errorf("reads back as another key: %v", err)
	}
}

func TestParseCerts(t *testing.T) {
	a, b := mustCA(t, "a", t0, t0.Add(time.Hour)), mustCA(t, "b", t0, t0.Add(time.Hour))
	var bundle []byte
	bundle = append(bundle, a.CertPEM...)
	bundle = append(bundle, a.KeyPEM...) // not a certificate: skipped
	bundle = append(bundle, b.CertPEM...)
	got, err := ParseCerts(bundle)
	if err != nil || len(got) != 2 || !got[0].Equal(a.Cert) || !got[1].Equal(b.Cert) {
		t.Errorf("got %d certificates, %v; want a's and b's", len(got), err)
	}
	if got, err := ParseCerts(nil); err != nil || len(got) != 0 {
		t.Errorf("empty bundle: %d certificates, %v", len(got), err)
	}
	bad := append(slices.Clone(a.CertPEM), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})...)
	if _, err := ParseCerts(bad); err == nil {
		t.Error("a bundle with a broken certificate was accepted")
	}

	if c, err := ParseCert(b.CertPEM); err != nil || !c.Equal(b.Cert) {
		t.Errorf("ParseCert: %v", err)
	}
	for name, data := range map[string][]byte{"empty": nil, "a key first": append(slices.Clone(a.KeyPEM), a.CertPEM...), "garbage DER": bad[len(a.CertPEM):]} {
		if _, err := ParseCert(data); err == nil {
			t.Errorf("ParseCert of %s: accepted", name)
		}
	}
}

func TestSign(t *testing.T) {
	ca := mustCA(t, "ca", t0.Add(-time.Minute), t0.Add(10*time.Hour))
	hosts := []string{"hook.ferry-system.svc", "127.0.0.1", "", "localhost", "::1", "localhost"}
	for _, tc := range []struct {
		name      string
		leaf      Leaf
		wantUntil time.Time
		wantUsage x509.KeyUsage
	}{
		{"within the CA's life", Leaf{NotBefore: t0, NotAfter: t0.Add(time.Hour)}, t0.Add(time.Hour), x509.KeyUsageDigitalSignature},
		{"cut to the CA's end", Leaf{NotBefore: t0, NotAfter: t0.Add(20 * time.Hour)}, ca.Cert.NotAfter, x509.KeyUsageDigitalSignature},
		{"key usage given", Leaf{NotBefore: t0, NotAfter: t0.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
			t0.Add(time.Hour), x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.leaf
			l.Subject = pkix.Name{CommonName: "leaf", Organization: []string{"org"}}
			l.Hosts = hosts
			l.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			certPEM, keyPEM, err := ca.Issue(l)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseCert(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			key, err := ParseKey(keyPEM)
			if err != nil || !samePublicKey(key.Public(), c.PublicKey) {
				t.Fatalf("the key returned is not the certificate's: %v", err)
			}
			if !c.NotBefore.Equal(t0) || !c.NotAfter.Equal(tc.wantUntil) {
				t.Errorf("valid %s to %s, want %s to %s", c.NotBefore, c.NotAfter, t0, tc.wantUntil)
			}
			if c.KeyUsage != tc.wantUsage || c.IsCA || !c.BasicConstraintsValid {
				t.Errorf("key usage %b (want %b), CA %v", c.KeyUsage, tc.wantUsage, c.IsCA)
			}
			if c.Subject.CommonName != "leaf" || !slices.Equal(c.Subject.Organization, []string{"org"}) {
				t.Errorf("subject %s", c.Subject)
			}
			if !slices.Equal(c.DNSNames, []string{"hook.ferry-system.svc", "localhost"}) || len(c.IPAddresses) != 2 ||
				!c.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
				t.Errorf("names %v, addresses %v", c.DNSNames, c.IPAddresses)
			}
			if want := []string{"127.0.0.1", "::1", "hook.ferry-system.svc", "localhost"}; !slices.Equal(Hosts(c), want) {
				t.Errorf("Hosts %v, want %v", Hosts(c), want)
			}
			if !bytes.Equal(c.AuthorityKeyId, ca.Cert.SubjectKeyId) {
				t.Error("the authority key id is not the CA's subject key id")
			}
			at := t0.Add(time.Minute)
			if err := VerifyLeaf(c, ca.Roots(), at, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, "hook.ferry-system.svc", "127.0.0.1", "::1", "localhost"); err != nil {
				t.Errorf("does not verify: %v", err)
			}
		})
	}
	if _, err := (&CA{Cert: ca.Cert}).Sign(Leaf{NotBefore: t0, NotAfter: t0.Add(time.Hour)}, mustKey(t).Public()); err == nil {
		t.Error("a CA without its key signed")
	}
}

func TestSignRequest(t *testing.T) {
	ca := mustCA(t, "ca", t0, t0.Add(time.Hour))
	key := mustKey(t)
	reqPEM, err := NewRequest(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "asked"}, DNSNames: []string{"asked.example"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ParseRequest(reqPEM)
	if err != nil {
		t.Fatal(err)
	}
	// The leaf says the names: the request's are not copied.
	certPEM, err := ca.SignRequest(req, Leaf{Subject: pkix.Name{CommonName: "given"}, Hosts: []string{"node-1"}, NotBefore: t0, NotAfter: t0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !samePublicKey(key.Public(), c.PublicKey) || c.Subject.CommonName != "given" || !slices.Equal(c.DNSNames, []string{"node-1"}) {
		t.Errorf("certificate for %s, names %v; want the request's key, CN given, node-1", c.Subject, c.DNSNames)
	}
	// A request whose signature is not its key's is refused.
	forged := *req
	forged.PublicKey = mustKey(t).Public()
	if _, err := ca.SignRequest(&forged, Leaf{NotBefore: t0, NotAfter: t0.Add(time.Hour)}); err == nil {
		t.Error("signed a request for a key that did not sign it")
	}
}

func TestParseRequest(t *testing.T) {
	key := mustKey(t)
	good, err := NewRequest(&x509.CertificateRequest{Subject: pkix.Name{CommonName: "n"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	tampered := slices.Clone(block.Bytes)
	tampered[len(tampered)-1] ^= 0xff // in the signature
	ca := mustCA(t, "ca", t0, t0.Add(time.Hour))
	for _, tc := range []struct {
		name string
		data []byte
		says string // "" accepted
	}{
		{"a request", good, ""},
		{"with surrounding blank lines", append(append([]byte("\n\n"), good...), "\n \n"...), ""},
		{"not PEM", []byte("hello"), "no PEM block"},
		{"empty", nil, "no PEM block"},
		{"a certificate", ca.CertPEM, `"CERTIFICATE" PEM block, not a CERTIFICATE REQUEST`},
		{"two requests", append(slices.Clone(good), good...), "more than one PEM block"},
		{"trailing text", append(slices.Clone(good), "x"...), "more than one PEM block"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), "does not parse"},
		{"a broken signature", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}), "not signed by its own key"},
	} {
		req, err := ParseRequest(tc.data)
		if tc.says == "" {
			if err != nil || req.Subject.CommonName != "n" {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.says)
		}
	}
}

func TestVerifyLeaf(t *testing.T) {
	ca, other := mustCA(t, "ca", t0, t0.Add(10*time.Hour)), mustCA(t, "other", t0, t0.Add(10*time.Hour))
	issue := func(ca *CA, usages ...x509.ExtKeyUsage) *x509.Certificate {
		t.Helper()
		certPEM, _, err := ca.Issue(Leaf{Hosts: []string{"node-1"}, ExtKeyUsage: usages, NotBefore: t0, NotAfter: t0.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseCert(certPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	leaf, serverOnly, foreign := issue(ca, both...), issue(ca, x509.ExtKeyUsageServerAuth), issue(other, both...)
	mid := t0.Add(30 * time.Minute)
	for _, tc := range []struct {
		name   string
		c      *x509.Certificate
		at     time.Time
		usages []x509.ExtKeyUsage
		hosts  []string
		says   string // "" valid
	}{
		{"valid for both roles", leaf, mid, both, []string{"node-1"}, ""},
		{"no usage asked", serverOnly, mid, nil, nil, ""},
		{"expired", leaf, t0.Add(2 * time.Hour), both, nil, "expired at 2026-01-01T01:00:00Z"},
		{"not yet valid", leaf, t0.Add(-time.Minute), both, nil, "not valid before 2026-01-01T00:00:00Z"},
		{"another CA's", foreign, mid, both, nil, "unknown authority"},
		{"a usage it lacks", serverOnly, mid, both, nil, "incompatible key usage"},
		{"another host", leaf, mid, both, []string{"node-2"}, "node-2"},
	} {
		err := VerifyLeaf(tc.c, ca.Roots(), tc.at, tc.usages, tc.hosts...)
		if tc.says == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.says)
		}
		if timely := !tc.at.Equal(mid); errors.Is(err, ErrOutsideValidity) != timely {
			t.Errorf("%s: errors.Is(%v, ErrOutsideValidity) is %v, want %v", tc.name, err, !timely, timely)
		}
	}
}

func TestLifeShare(t *testing.T) {
	c := &x509.Certificate{NotBefore: t0.Add(-5 * time.Minute), NotAfter: t0.Add(3 * time.Hour)}
	for _, tc := range []struct {
		start    time.Time
		num, den int64
		want     time.Time
	}{
		{t0, 2, 3, t0.Add(2 * time.Hour)},
		{t0, 5, 6, t0.Add(150 * time.Minute)},
		{c.NotBefore, 0, 1, c.NotBefore},
		{c.NotBefore, 1, 1, c.NotAfter},
		{c.NotBefore, 2, 3, t0.Add(-5*time.Minute + 2*185*time.Minute/3)},
	} {
		if got := LifeShare(c, tc.start, tc.num, tc.den); !got.Equal(tc.want) {
			t.Errorf("LifeShare from %s, %d/%d: %s, want %s", tc.start, tc.num, tc.den, got, tc.want)
		}
	}
}

func TestNewSerial(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s, err := NewSerial()
		if err != nil {
			t.Fatal(err)
		}
		if s.Sign() < 0 || s.BitLen() > 127 {
			t.Fatalf("serial %s: want 0 ≤ s < 2^127", s)
		}
		if seen[s.String()] {
			t.Fatalf("serial %s twice", s)
		}
		seen[s.String()] = true
	}
}
