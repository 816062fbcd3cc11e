package migrationsigner

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/ferryvm/ferry/internal/migrationtls"
	"github.com/ferryvm/ferry/internal/pki"
)

// Reasons of the Denied (or Failed) condition, and of the Approved one.
const (
	ReasonApproved       = "FerryNodeAgent"
	ReasonInvalidRequest = "InvalidRequest"
	ReasonUsages         = "UnexpectedUsages"
	ReasonSubject        = "UnexpectedSubject"
	ReasonNames          = "UnexpectedSubjectAltNames"
	ReasonKey            = "UnsupportedKey"
	ReasonRequester      = "NotTheNodesAgent"
)

// NodeNameExtra is where kube-apiserver puts the node of the Pod a ServiceAccount token is
// bound to (the ServiceAccountTokenPodNodeInfo feature, 1.30 and later).
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// adminGroup may ask for any node's certificate.
const adminGroup = "system:masters"

// Policy decides which requests the signer approves.
type Policy struct {
	// AgentUser is the user name of the node agents' ServiceAccount,
	// system:serviceaccount:<namespace>:ferry-agent.
	AgentUser string
}

// verdict is the policy's answer to one request.
type verdict struct {
	approve         bool
	reason, message string
	// node and request are set when the request itself is acceptable.
	node    string
	request *x509.CertificateRequest
}

func deny(reason, format string, args ...any) verdict {
	return verdict{reason: reason, message: fmt.Sprintf(format, args...)}
}

// decide applies the signer's rules to csr, in the order a person fixing a request would
// want to hear about them: what is asked for, then who asks.
func (p Policy) decide(csr *certificatesv1.CertificateSigningRequest) verdict {
	req, v := parseRequest(csr.Spec.Request)
	if req == nil {
		return v
	}
	if v := checkUsages(csr.Spec.Usages); !v.approve {
		return v
	}
	node, v := checkSubject(req)
	if node == "" {
		return v
	}
	if v := checkKey(req); !v.approve {
		return v
	}
	return p.checkRequester(csr.Spec, node, req)
}

// parseRequest reads spec.request: network input, parsed (and fuzzed) in internal/pki.
func parseRequest(raw []byte) (*x509.CertificateRequest, verdict) {
	req, err := pki.ParseRequest(raw)
	if err != nil {
		return nil, deny(ReasonInvalidRequest, "spec.request: %v", err)
	}
	return req, verdict{approve: true}
}

func checkUsages(got []certificatesv1.KeyUsage) verdict {
	want := migrationtls.Usages[certificatesv1.KeyUsage]()
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	slices.Sort(want)
	if len(sorted) != len(got) || !slices.Equal(sorted, want) {
		return deny(ReasonUsages, "usages %s: a migration certificate has exactly %s", quoteUsages(got), quoteUsages(migrationtls.Usages[certificatesv1.KeyUsage]()))
	}
	return verdict{approve: true}
}

func quoteUsages(u []certificatesv1.KeyUsage) string {
	s := make([]string, len(u))
	for i, x := range u {
		s[i] = fmt.Sprintf("%q", x)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// checkSubject returns the node the request is for: its subject must be the common name
// system:ferry-node:<node> alone, its only alternative name the DNS name <node>.
func checkSubject(req *x509.CertificateRequest) (string, verdict) {
	s := req.Subject
	node, ok := migrationtls.NodeOf(s.CommonName)
	if !ok {
		return "", deny(ReasonSubject, "subject common name %q: a migration certificate's is %s<node name>", s.CommonName, migrationtls.NodeCNPrefix)
	}
	if len(s.Names) != 1 || len(s.ExtraNames) > 0 {
		return "", deny(ReasonSubject, "subject %q: a migration certificate's subject is the common name %s alone", s.String(), migrationtls.NodeCN(node))
	}
	if len(req.IPAddresses) > 0 || len(req.EmailAddresses) > 0 || len(req.URIs) > 0 || !slices.Equal(req.DNSNames, []string{node}) {
		return "", deny(ReasonNames, "subject alternative names DNS %v, IP %v, email %v, URI %v: node %s's migration certificate names DNS %s only",
			req.DNSNames, req.IPAddresses, req.EmailAddresses, req.URIs, node, node)
	}
	return node, verdict{approve: true}
}

func checkKey(req *x509.CertificateRequest) verdict {
	switch k := req.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return verdict{approve: true}
		}
		return deny(ReasonKey, "ECDSA key on curve %s: use P-256 or P-384", k.Curve.Params().Name)
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return verdict{approve: true}
		}
		return deny(ReasonKey, "RSA key of %d bits: use at least 2048", k.N.BitLen())
	}
	return deny(ReasonKey, "%s key: use ECDSA (P-256, P-384) or RSA (2048 bits or more), which QEMU's GnuTLS takes", req.PublicKeyAlgorithm)
}

func (p Policy) checkRequester(spec certificatesv1.CertificateSigningRequestSpec, node string, req *x509.CertificateRequest) verdict {
	ok := verdict{approve: true, reason: ReasonApproved, node: node, request: req}
	if slices.Contains(spec.Groups, adminGroup) {
		ok.message = fmt.Sprintf("cluster admin %s asked for node %s's migration certificate", spec.Username, node)
		return ok
	}
	names := spec.Extra[NodeNameExtra]
	if spec.Username == p.AgentUser && len(names) == 1 && names[0] == node {
		ok.message = fmt.Sprintf("the ferry-agent on node %s asked for its node's migration certificate", node)
		return ok
	}
	from := "a token that names no node"
	if len(names) > 0 {
		from = "a token of node " + strings.Join(names, ", ")
	}
	return deny(ReasonRequester, "requested by %s with %s: node %s's migration certificate is signed only for the agent on %s (%s with a token bound to its Pod) or a cluster admin (%s)",
		spec.Username, from, node, node, p.AgentUser, adminGroup)
}

// duration is how long the certificate of csr is valid: what it asks for
// (spec.expirationSeconds), at most migrationtls.DefaultDuration.
func duration(csr *certificatesv1.CertificateSigningRequest) time.Duration {
	d := migrationtls.DefaultDuration
	if s := csr.Spec.ExpirationSeconds; s != nil && *s > 0 {
		d = min(d, time.Duration(*s)*time.Second)
	}
	return d
}

// AgentUser is the user name of the ferry-agent ServiceAccount in namespace.
func AgentUser(namespace string) string {
	return "system:serviceaccount:" + namespace + ":ferry-agent"
}
