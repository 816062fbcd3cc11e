package webhookcert

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/ferryvm/ferry/internal/pki"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mustCA(t *testing.T, now time.Time, validity time.Duration) pki.CA {
	t.Helper()
	ca, err := newAuthority(now, validity)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestIssueServing checks a serving certificate: it verifies against its CA for every
// host (names and addresses), its key is the one returned, and it never outlives the CA.
func TestIssueServing(t *testing.T) {
	ca := mustCA(t, t0, 10*time.Hour)
	hosts := []string{"hook.ferry-system.svc", "hook.ferry-system.svc.cluster.local", "127.0.0.1", "localhost"}
	for _, tc := range []struct {
		name      string
		validity  time.Duration
		wantUntil time.Time
	}{
		{"within the CA's life", time.Hour, t0.Add(time.Hour)},
		{"clamped to the CA's end", 20 * time.Hour, ca.Cert.NotAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, keyPEM, err := issueServing(ca, hosts, t0, tc.validity)
			if err != nil {
				t.Fatal(err)
			}
			pair, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatalf("certificate and key do not match: %v", err)
			}
			c := pair.Leaf
			if !c.NotAfter.Equal(tc.wantUntil) {
				t.Errorf("NotAfter %s, want %s", c.NotAfter, tc.wantUntil)
			}
			if got := issued(c); !got.Equal(t0) {
				t.Errorf("issued %s, want %s (NotBefore backdated by %s)", got, t0, backdate)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			for _, h := range hosts {
				_, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: h, CurrentTime: t0.Add(time.Minute)})
				if err != nil {
					t.Errorf("does not verify for %s: %v", h, err)
				}
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.svc", CurrentTime: t0}); err == nil {
				t.Error("verifies for a host it is not for")
			}
		})
	}
}

// TestStateRoundTrip writes a CA state into a Secret and reads it back.
func TestStateRoundTrip(t *testing.T) {
	old, signer, next := mustCA(t, t0, time.Hour), mustCA(t, t0.Add(40*time.Minute), time.Hour), mustCA(t, t0.Add(80*time.Minute), time.Hour)
	s := caState{signer: signer, next: &next, retired: []*x509.Certificate{old.Cert}}
	sec := &corev1.Secret{Data: map[string][]byte{"other": []byte("kept")}}
	s.encode(sec)
	got, ok, err := decodeState(sec)
	if err != nil || !ok {
		t.Fatalf("decode: ok %v, %v", ok, err)
	}
	if !got.signer.Cert.Equal(signer.Cert) || got.next == nil || !got.next.Cert.Equal(next.Cert) || len(got.retired) != 1 || !got.retired[0].Equal(old.Cert) {
		t.Errorf("read back a different state")
	}
	if string(sec.Data["other"]) != "kept" {
		t.Error("encode dropped a key it does not own")
	}
	// Without next and retired CAs, their keys go.
	caState{signer: signer}.encode(sec)
	for _, k := range []string{keyNextCert, keyNextKey, keyRetiredCert} {
		if _, ok := sec.Data[k]; ok {
			t.Errorf("key %s left behind", k)
		}
	}
	if _, ok, err := decodeState(&corev1.Secret{}); ok || err != nil {
		t.Errorf("an empty Secret: ok %v, %v; want no CA and no error", ok, err)
	}
	sec.Data[keyCAKey] = next.KeyPEM
	if _, _, err := decodeState(sec); err == nil {
		t.Error("a CA with another CA's key was accepted")
	}
}
