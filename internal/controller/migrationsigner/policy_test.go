package migrationsigner

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/utils/ptr"

	"github.com/ferryvm/ferry/internal/migrationtls"
)

const agent = "system:serviceaccount:ferry-system:ferry-agent"

// csrFor builds a request as the agent of node would, then lets edit change it.
func csrFor(t *testing.T, node string, edit func(tmpl *x509.CertificateRequest, spec *certificatesv1.CertificateSigningRequestSpec), key crypto.Signer) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		key = k
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: migrationtls.NodeCN(node)}, DNSNames: []string{node}}
	spec := certificatesv1.CertificateSigningRequestSpec{
		SignerName: migrationtls.SignerName,
		Usages:     migrationtls.Usages[certificatesv1.KeyUsage](),
		Username:   agent,
		Groups:     []string{"system:serviceaccounts", "system:serviceaccounts:ferry-system", "system:authenticated"},
		Extra:      map[string]certificatesv1.ExtraValue{NodeNameExtra: {node}},
	}
	if edit != nil {
		edit(tmpl, &spec)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	if spec.Request == nil {
		spec.Request = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	return &certificatesv1.CertificateSigningRequest{Spec: spec}
}

func TestPolicy(t *testing.T) {
	p := Policy{AgentUser: agent}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	type edit = func(*x509.CertificateRequest, *certificatesv1.CertificateSigningRequestSpec)
	for _, tc := range []struct {
		name   string
		edit   edit
		key    crypto.Signer
		reason string // "" approved
		says   string
	}{
		{"the node's agent on its Pod-bound token", nil, nil, "", "the ferry-agent on node node-1"},
		{"a cluster admin (ferry up's agents)", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Username, s.Groups, s.Extra = "ferry-admin", []string{"system:masters", "system:authenticated"}, nil
		}, nil, "", "cluster admin ferry-admin"},
		{"RSA 2048", nil, rsa2048, "", ""},
		{"usages in another order", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Usages = []certificatesv1.KeyUsage{certificatesv1.UsageClientAuth, certificatesv1.UsageServerAuth, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageDigitalSignature}
		}, nil, "", ""},

		{"not PEM", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Request = []byte("hello")
		}, nil,
			ReasonInvalidRequest, "no PEM block"},
		{"a certificate instead of a request", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Request = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})
		}, nil, ReasonInvalidRequest, `"CERTIFICATE" PEM block`},
		{"garbage DER", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Request = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}})
		}, nil, ReasonInvalidRequest, "does not parse"},
		{"usage missing", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Usages = s.Usages[:3]
		}, nil, ReasonUsages, "exactly"},
		{"usage added", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Usages = append(s.Usages, certificatesv1.UsageCertSign)
		}, nil, ReasonUsages, `"cert sign"`},
		{"usage twice", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Usages = append(s.Usages, certificatesv1.UsageServerAuth)
		}, nil, ReasonUsages, "exactly"},
		{"another common name", func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.Subject.CommonName = "system:node:node-1"
		}, nil, ReasonSubject, `"system:node:node-1"`},
		{"a common name that is no node name", func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.Subject.CommonName = migrationtls.NodeCNPrefix + "Node_1"
		}, nil, ReasonSubject, "<node name>"},
		{"an organization", func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.Subject.Organization = []string{"system:masters"}
		}, nil, ReasonSubject, "common name system:ferry-node:node-1 alone"},
		{"another DNS name", func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.DNSNames = []string{"node-2"}
		}, nil, ReasonNames, "DNS node-1 only"},
		{"a second DNS name", func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.DNSNames = append(r.DNSNames, "kubernetes.default.svc")
		}, nil, ReasonNames, "kubernetes.default.svc"},
		{"no DNS name", func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) { r.DNSNames = nil }, nil,
			ReasonNames, "DNS node-1 only"},
		{"an IP address", func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.IPAddresses = []net.IP{net.ParseIP("10.66.0.11")}
		}, nil, ReasonNames, "10.66.0.11"},
		{"an e-mail address", func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.EmailAddresses = []string{"root@node-1"}
		}, nil, ReasonNames, "root@node-1"},
		{"a URI", func(r *x509.CertificateRequest, _ *certificatesv1.CertificateSigningRequestSpec) {
			r.URIs = []*url.URL{{Scheme: "spiffe", Host: "ferry", Path: "/node-1"}}
		}, nil, ReasonNames, "spiffe://ferry/node-1"},
		{"RSA 1024", nil, rsa1024, ReasonKey, "1024 bits"},
		{"ECDSA P-224", nil, p224, ReasonKey, "P-224"},
		{"Ed25519", nil, ed, ReasonKey, "Ed25519"},
		{"the agent of another node", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Extra = map[string]certificatesv1.ExtraValue{NodeNameExtra: {"node-2"}}
		}, nil, ReasonRequester, "with a token of node node-2: node node-1's migration certificate is signed only for the agent on node-1"},
		{"the agent on a token bound to no Pod", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Extra = nil
		}, nil, ReasonRequester, "a token that names no node"},
		{"two node names", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Extra = map[string]certificatesv1.ExtraValue{NodeNameExtra: {"node-1", "node-2"}}
		}, nil, ReasonRequester, "node-1, node-2"},
		{"another ServiceAccount on the node", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Username = "system:serviceaccount:vms:default"
		}, nil, ReasonRequester, "requested by system:serviceaccount:vms:default"},
		{"a user with a node name in extra", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
			s.Username, s.Groups = "mallory", []string{"system:authenticated"}
		}, nil, ReasonRequester, "requested by mallory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := p.decide(csrFor(t, "node-1", tc.edit, tc.key))
			switch {
			case tc.reason == "" && !v.approve:
				t.Fatalf("denied %s: %s", v.reason, v.message)
			case tc.reason == "" && (v.node != "node-1" || v.request == nil || v.reason != ReasonApproved):
				t.Fatalf("approved for node %q (reason %s, request %v)", v.node, v.reason, v.request != nil)
			case tc.reason != "" && v.approve:
				t.Fatalf("approved (%s), want denied %s", v.message, tc.reason)
			case tc.reason != "" && v.reason != tc.reason:
				t.Fatalf("denied %s (%s), want %s", v.reason, v.message, tc.reason)
			}
			if !strings.Contains(v.message, tc.says) {
				t.Errorf("message %q does not say %q", v.message, tc.says)
			}
			t.Logf("%s: %s", v.reason, v.message)
		})
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		asked *int32
		want  time.Duration
	}{
		{nil, migrationtls.DefaultDuration},
		{ptr.To[int32](3600), time.Hour},
		{ptr.To[int32](30 * 24 * 3600), migrationtls.DefaultDuration},
	} {
		csr := &certificatesv1.CertificateSigningRequest{Spec: certificatesv1.CertificateSigningRequestSpec{ExpirationSeconds: tc.asked}}
		if got := duration(csr); got != tc.want {
			t.Errorf("expirationSeconds %v: %v, want %v", tc.asked, got, tc.want)
		}
	}
}
