package launcher

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/migrationtls"
)

// migrationTLSDir is Options.MigrationTLSDir, else $FERRY_MIGRATION_TLS_DIR.
func migrationTLSDir(o Options) string {
	if o.MigrationTLSDir != "" {
		return o.MigrationTLSDir
	}
	return strings.TrimSpace(os.Getenv(migrationtls.EnvDir))
}

// stageTLS checks the node's credentials in dir (node's certificate, valid at now, signed by
// the CA it comes with; node "" skips the name) and copies them into a new directory in
// runDir, for QEMU to read as one consistent set even while the agent renews them.
// cleanup removes the copy: call it once QEMU has read it.
func stageTLS(dir, runDir, node string, now time.Time) (stage string, cleanup func(), err error) {
	c, err := migrationtls.Load(dir)
	if errors.Is(err, migrationtls.ErrNoCredentials) {
		return "", nil, fmt.Errorf("migration TLS is on, but this node has no migration certificate yet (%v): its agent asks the cluster's signer %s for one; see the agent's log",
			err, migrationtls.SignerName)
	}
	if err != nil {
		return "", nil, fmt.Errorf("migration TLS is on, but %w", err)
	}
	if err := c.Check(node, now); err != nil {
		return "", nil, fmt.Errorf("migration TLS is on, but this node's migration certificate in %s does not serve: %v (its agent renews it; see the agent's log)", dir, err)
	}
	stage, err = os.MkdirTemp(runDir, "migration-tls-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(stage) }
	if err := migrationtls.Write(stage, c); err != nil {
		cleanup()
		return "", nil, err
	}
	return stage, cleanup, nil
}

// outgoingTLS stages the node's credentials for a migration to targetNode.
func (l *launcher) outgoingTLS(targetNode string) (*hypervisor.MigrationTLS, func(), error) {
	if targetNode == "" {
		return nil, nil, errors.New("migration TLS is on, but the request names no target node, whose certificate the target must show (targetNode)")
	}
	stage, cleanup, err := stageTLS(l.tlsDir, l.o.RunDir, os.Getenv("FERRY_NODE_NAME"), time.Now())
	if err != nil {
		return nil, nil, err
	}
	return &hypervisor.MigrationTLS{Dir: stage, Hostname: targetNode}, cleanup, nil
}

// allowedSource is the pattern QEMU holds an incoming migration's client certificate to
// (its authz list, against the subject as GnuTLS writes it): the source node's exactly,
// so that no other node's certificate can feed this VM a guest. Without a named source
// (a target pod of an older controller), any Ferry node's.
func allowedSource(node string) string {
	if node == "" {
		return migrationtls.AllowedPeers
	}
	return "CN=" + migrationtls.NodeCN(node)
}
