package migrationtls_test

import (
	"context"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/migrationtls"
)

// TestQEMUTargetTakesOnlyItsSource: a target told its migration comes from node-c (the
// launcher's --incoming-from) refuses node-a, though node-a's certificate is a good Ferry
// node's of the same CA; the source it expects then migrates in.
func TestQEMUTargetTakesOnlyItsSource(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	certPEM, keyPEM, err := migrationtls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := migrationtls.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	nodeA, _ := ca.NodeCredentials("node-a", now, time.Hour)
	nodeB, _ := ca.NodeCredentials("node-b", now, time.Hour)
	nodeC, _ := ca.NodeCredentials("node-c", now, time.Hour)
	dirA, dirB, dirC := credentialsDir(t, nodeA), credentialsDir(t, nodeB), credentialsDir(t, nodeC)

	dst := paused(t, true)
	uri, _ := freeURI(t)
	only := "CN=" + migrationtls.NodeCN("node-c")
	if err := dst.PrepareIncoming(ctx, uri, &hypervisor.MigrationTLS{Dir: dirB, AllowedPeers: []string{only}}); err != nil {
		t.Fatal(err)
	}
	migrate := func(dir string) (hypervisor.MigrationInfo, error) {
		src := paused(t, false)
		if err := src.MigrateOut(ctx, uri, hypervisor.MigrationParams{TLS: &hypervisor.MigrationTLS{Dir: dir, Hostname: "node-b"}}); err != nil {
			return hypervisor.MigrationInfo{}, err
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return src.WaitMigration(wctx, 20*time.Millisecond)
	}
	info, err := migrate(dirA)
	if err == nil && info.Status != "failed" {
		t.Fatalf("node-a migrated into a target waiting for node-c: %s", info.Status)
	}
	t.Logf("node-a into a target waiting for node-c: %s %s %v", info.Status, info.Error, err)
	// QEMU's target ends its incoming state when a peer is refused after the handshake
	// (the authz check comes then), so a fresh target waits for node-c's stream.
	dst2 := paused(t, true)
	uri2, _ := freeURI(t)
	if err := dst2.PrepareIncoming(ctx, uri2, &hypervisor.MigrationTLS{Dir: dirB, AllowedPeers: []string{only}}); err != nil {
		t.Fatal(err)
	}
	uri = uri2
	info, err = migrate(dirC)
	if err != nil || info.Status != "completed" {
		t.Fatalf("node-c into its target: %s %s %v", info.Status, info.Error, err)
	}
	t.Logf("node-c into its target: %s in %v", info.Status, info.TotalTime)
}
