package migrationtls

import (
	"crypto/x509"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/ferryvm/ferry/internal/pki"
)

// SignerName is the CertificateSigningRequest signer of node migration certificates,
// served by Ferry's controller. Besides the issued certificate, its
// status.certificate carries a second PEM block: the signer's CA, the trust anchor of
// migration peers.
const SignerName = "virtualization.ferryvm.io/migration"

// NodeCNPrefix starts the common name of a node's migration certificate:
// "system:ferry-node:<node>". The node name is also the certificate's only DNS name, which
// a migration source checks (QEMU tls-hostname).
const NodeCNPrefix = "system:ferry-node:"

// AllowedPeers is the pattern a migration target holds a source's certificate to (QEMU
// authz-list against the subject as GnuTLS writes it): a Ferry node's.
const AllowedPeers = "CN=" + NodeCNPrefix + "*"

// DefaultDuration is how long a node certificate is valid; agents renew it after two
// thirds of that (RenewAt).
const DefaultDuration = 7 * 24 * time.Hour

// DirName is the node's credentials directory inside the agent's state directory.
const DirName = "migration-tls"

// EnvDir is the environment variable in which the node agent tells its launchers where
// the node's credentials are; unset, launchers migrate in the clear.
const EnvDir = "FERRY_MIGRATION_TLS_DIR"

// NodeCN is the common name of node's certificate.
func NodeCN(node string) string { return NodeCNPrefix + node }

// NodeOf returns the node a common name is for, if it is a node certificate's.
func NodeOf(cn string) (string, bool) {
	node, ok := strings.CutPrefix(cn, NodeCNPrefix)
	if !ok || len(validation.IsDNS1123Subdomain(node)) > 0 {
		return "", false
	}
	return node, true
}

// Usages are exactly what a migration endpoint needs: a TLS server (target) and client
// (source) with one certificate. QEMU's certificate checks want key encipherment too. U is
// certificatesv1.KeyUsage, whose values these are (launchers do not link the API types).
func Usages[U ~string]() []U {
	return []U{"digital signature", "key encipherment", "server auth", "client auth"}
}

// RenewAt is when a certificate should be replaced: after two thirds of its lifetime, so
// that a signer that is down for a while (up to a third of it) costs nothing.
func RenewAt(cert *x509.Certificate) time.Time {
	return pki.LifeShare(cert, cert.NotBefore, 2, 3)
}
