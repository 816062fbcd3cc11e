package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The files QEMU's tls-creds-x509 object reads from its dir. A migration target (endpoint
// server) reads the server pair, a source (endpoint client) the client pair; both read the
// CA that must have signed the peer's certificate (verify-peer).
const (
	TLSCACertFile     = "ca-cert.pem"
	TLSServerCertFile = "server-cert.pem"
	TLSServerKeyFile  = "server-key.pem"
	TLSClientCertFile = "client-cert.pem"
	TLSClientKeyFile  = "client-key.pem"
)

// QOM ids of the objects a TLS migration adds to QEMU.
const (
	tlsCredsID = "ferry-migration-tls"
	tlsAuthzID = "ferry-migration-authz"
)

// MigrationTLS makes a migration stream TLS with mutual certificate checks: QEMU's
// tls-creds-x509 with verify-peer on, named by the migration parameter tls-creds.
//
// QEMU reads the files when the credentials object is created, which PrepareIncoming and
// MigrateOut do just before the migration (QMP object-add): certificates renewed on disk
// since QEMU started are the ones used, and Dir may be removed once they returned.
type MigrationTLS struct {
	// Dir holds TLSCACertFile and the server pair (a target) or the client pair (a source).
	Dir string
	// Hostname (source only) is the name the target's certificate must carry (QEMU's
	// tls-hostname): the migration URI holds an address, which the certificate does not.
	Hostname string
	// AllowedPeers (target only) are glob patterns of which the source certificate's
	// distinguished name must match one, as GnuTLS writes it (e.g. "CN=system:ferry-node:*"),
	// through a QEMU authz-list object named by tls-authz. Empty: any certificate the CA
	// signed.
	AllowedPeers []string
}

// WriteTLSDir writes a CA, a certificate and its key as tls-creds-x509 reads them, the
// same pair for both endpoints: dir is made 0700, every file 0600 and replaced atomically.
func WriteTLSDir(dir string, caPEM, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	// Keys first: a reader that sees a new certificate finds its key already there.
	for _, f := range []struct {
		name string
		data []byte
	}{
		{TLSServerKeyFile, keyPEM}, {TLSClientKeyFile, keyPEM}, {TLSCACertFile, caPEM},
		{TLSServerCertFile, certPEM}, {TLSClientCertFile, certPEM},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// tlsObjects are the object-add arguments of a TLS migration's endpoint ("server" on the
// target, "client" on the source): an authz-list first when a target restricts its peers,
// then the credentials.
func tlsObjects(endpoint string, t MigrationTLS) []map[string]any {
	var out []map[string]any
	if endpoint == "server" && len(t.AllowedPeers) > 0 {
		rules := make([]map[string]any, 0, len(t.AllowedPeers))
		for _, p := range t.AllowedPeers {
			rules = append(rules, map[string]any{"match": p, "policy": "allow", "format": "glob"})
		}
		out = append(out, map[string]any{"qom-type": "authz-list", "id": tlsAuthzID, "policy": "deny", "rules": rules})
	}
	return append(out, map[string]any{
		"qom-type": "tls-creds-x509", "id": tlsCredsID, "dir": t.Dir, "endpoint": endpoint, "verify-peer": true,
	})
}

// tlsParameters are the migrate-set-parameters arguments that use the objects of
// tlsObjects.
func tlsParameters(endpoint string, t MigrationTLS) map[string]any {
	p := map[string]any{"tls-creds": tlsCredsID}
	if endpoint == "client" {
		p["tls-hostname"] = t.Hostname
	}
	if endpoint == "server" {
		authz := ""
		if len(t.AllowedPeers) > 0 {
			authz = tlsAuthzID
		}
		p["tls-authz"] = authz
	}
	return p
}

func checkTLS(endpoint string, t MigrationTLS) error {
	switch {
	case t.Dir == "":
		return errors.New("hypervisor: migration TLS without a credentials directory")
	case endpoint == "client" && t.Hostname == "":
		return errors.New("hypervisor: outgoing migration TLS without the target's host name to check its certificate against")
	}
	return nil
}

// setupTLS replaces the TLS objects of an earlier migration by new ones (QEMU reads the
// credentials now) and sets the migration parameters that use them, merged into params,
// which it sends and then reads back: a migration meant to be encrypted never starts in
// the clear because QEMU dropped a parameter.
func (inst *Instance) setupTLS(ctx context.Context, endpoint string, t MigrationTLS, params map[string]any) error {
	if err := checkTLS(endpoint, t); err != nil {
		return err
	}
	for _, id := range []string{tlsCredsID, tlsAuthzID} {
		// Not there is the usual answer; in use (a migration still holding them) is not:
		// object-add then says so.
		_ = inst.qmp.Execute(ctx, "object-del", map[string]any{"id": id}, nil)
	}
	for _, obj := range tlsObjects(endpoint, t) {
		if err := inst.qmp.Execute(ctx, "object-add", obj, nil); err != nil {
			return fmt.Errorf("migration TLS: object-add %s: %w", obj["qom-type"], err)
		}
	}
	tp := tlsParameters(endpoint, t)
	for k, v := range tp {
		params[k] = v
	}
	if err := inst.qmp.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
		return err
	}
	var got map[string]any
	if err := inst.qmp.Execute(ctx, "query-migrate-parameters", nil, &got); err != nil {
		return err
	}
	for k, want := range tp {
		if got[k] != want {
			return fmt.Errorf("migration TLS: QEMU reports %s %v after it was set to %q", k, got[k], want)
		}
	}
	return nil
}

// Describe says how a migration is protected, for logs; t may be nil (plain TCP).
func (t *MigrationTLS) Describe() string {
	if t == nil {
		return "plain TCP"
	}
	s := "TLS"
	if t.Hostname != "" {
		s += ", peer certificate for " + t.Hostname
	}
	if len(t.AllowedPeers) > 0 {
		s += ", peers " + strings.Join(t.AllowedPeers, " ")
	}
	return s
}
