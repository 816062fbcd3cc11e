package migrationtls_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/migrationtls"
)

// paused starts a QEMU that runs nothing (-S, a blank disk): a cheap real end of a
// migration.
func paused(t *testing.T, incoming bool) *hypervisor.Instance {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "blank.raw")
	blank := make([]byte, 1<<20)
	blank[510], blank[511] = 0x55, 0xaa // a boot sector that boots nothing: -S never runs it
	if err := os.WriteFile(disk, blank, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inst, err := hypervisor.Start(ctx, hypervisor.Config{Name: "tls", MemoryKiB: 32*1024 - 8, Disks: []hypervisor.Disk{{Path: disk, Format: "raw"}},
		RunDir: filepath.Join(dir, "run"), Incoming: incoming, Extra: []string{"-S"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); inst.Wait() })
	return inst
}

func freeURI(t *testing.T) (string, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	return "tcp:" + addr, addr
}

func credentialsDir(t *testing.T, c *migrationtls.Credentials) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	if err := migrationtls.Write(dir, c); err != nil {
		t.Fatal(err)
	}
	return dir
}

// intruder is a certificate of the right CA whose subject is no Ferry node's.
func intruder(t *testing.T, ca *migrationtls.CA, now time.Time) *migrationtls.Credentials {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "intruder"}, DNSNames: []string{"node-a"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := x509.ParseCertificateRequest(der)
	chain, err := ca.Sign(req, "node-a", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := pem.Decode(chain)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	c, err := migrationtls.Parse(pem.EncodeToMemory(first), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestQEMUMigrationTLS migrates between real QEMU processes with the credentials this
// package writes: a target accepts only a source with a Ferry node certificate of its CA
// and stays ready after refusing one; a source sends only to the node it was told.
func TestQEMUMigrationTLS(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	newCA := func() *migrationtls.CA {
		certPEM, keyPEM, err := migrationtls.NewCA(now)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := migrationtls.ParseCA(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return ca
	}
	ca, foreign := newCA(), newCA()
	nodeA, _ := ca.NodeCredentials("node-a", now, time.Hour)
	nodeB, _ := ca.NodeCredentials("node-b", now, time.Hour)
	stranger, _ := foreign.NodeCredentials("node-a", now, time.Hour)
	dirA, dirB, dirStranger, dirIntruder := credentialsDir(t, nodeA), credentialsDir(t, nodeB), credentialsDir(t, stranger), credentialsDir(t, intruder(t, ca, now))

	dst := paused(t, true)
	uri, addr := freeURI(t)
	if err := dst.PrepareIncoming(ctx, uri, &hypervisor.MigrationTLS{Dir: dirB, AllowedPeers: []string{migrationtls.AllowedPeers}}); err != nil {
		t.Fatal(err)
	}

	// Someone without a certificate: plain bytes, and TLS without a client certificate.
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Write([]byte("QEVM\x00\x00\x00\x03"))
		c.Close()
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "node-b"})
	if err == nil {
		// TLS 1.3 reports the missing client certificate on the first read.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		state := conn.ConnectionState()
		conn.Close()
		if len(state.PeerCertificates) > 0 {
			t.Logf("the target showed %s", state.PeerCertificates[0].Subject)
			if state.PeerCertificates[0].Subject.CommonName != "system:ferry-node:node-b" {
				t.Errorf("the target showed %s", state.PeerCertificates[0].Subject)
			}
		}
	}
	if err == nil {
		t.Error("the target took a TLS client without a certificate")
	} else {
		t.Logf("TLS without a client certificate: %v", err)
	}

	migrateFrom := func(src *hypervisor.Instance, uri, dir, hostname string) (hypervisor.MigrationInfo, error) {
		p := hypervisor.MigrationParams{TLS: &hypervisor.MigrationTLS{Dir: dir, Hostname: hostname}}
		if dir == "" {
			p.TLS = nil
		}
		if err := src.MigrateOut(ctx, uri, p); err != nil {
			return hypervisor.MigrationInfo{}, err
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return src.WaitMigration(wctx, 20*time.Millisecond)
	}
	var src *hypervisor.Instance // the last source
	migrate := func(uri, dir, hostname string) (hypervisor.MigrationInfo, error) {
		src = paused(t, false)
		return migrateFrom(src, uri, dir, hostname)
	}
	for _, tc := range []struct {
		name, dir, hostname, says string
	}{
		{"a plain source", "", "", ""},
		{"a source of the CA that is no Ferry node", dirIntruder, "node-b", ""},
		// Last: refused in the handshake, before the source pauses its guest, so the same
		// source can try again below. (Refused by the target's authz after the handshake,
		// a source may already have paused for the switchover, and QEMU then refuses to
		// migrate it again.)
		{"a source of another CA", dirStranger, "node-b", ""},
	} {
		info, err := migrate(uri, tc.dir, tc.hostname)
		if tc.dir == "" && err == nil && info.Status == "completed" {
			// A plain source may see its whole (small, paused) stream taken by the socket
			// before the target drops the connection, and call it completed: what counts
			// is that the target took none of it (checked below).
			t.Logf("%s: the source calls it %s; the target must still wait", tc.name, info.Status)
		} else if err == nil || info.Status != "failed" || !strings.Contains(info.Error, tc.says) {
			t.Errorf("%s: %s %v, want failed (%q)", tc.name, info.Status, err, tc.says)
		} else {
			t.Logf("%s: refused: %s", tc.name, info.Error)
		}
		if st, err := dst.Status(ctx); err != nil || st != "inmigrate" {
			t.Fatalf("after %s the target is %q (%v), want still waiting", tc.name, st, err)
		}
	}
	// The last source, refused, tries again with its own certificate: QEMU's TLS objects
	// of the failed attempt are replaced.
	info, err := migrateFrom(src, uri, dirA, "node-b")
	if err != nil || info.Status != "completed" {
		t.Fatalf("node-a to node-b: %s %v", info.Status, err)
	}
	t.Logf("node-a to node-b over TLS: %s in %v", info.Status, info.TotalTime)

	// A source sent to the wrong node refuses to go on. (The target took the source's
	// certificate and began to load the stream: it ends when the stream breaks off, as
	// after any failed migration.)
	other := paused(t, true)
	uri, _ = freeURI(t)
	if err := other.PrepareIncoming(ctx, uri, &hypervisor.MigrationTLS{Dir: dirB, AllowedPeers: []string{migrationtls.AllowedPeers}}); err != nil {
		t.Fatal(err)
	}
	info, err = migrate(uri, dirA, "node-c")
	if err == nil || !strings.Contains(info.Error, "does not match the hostname node-c") {
		t.Errorf("a source told node-c, at node-b: %s %v", info.Status, err)
	} else {
		t.Logf("a source told node-c, at node-b: refused: %s", info.Error)
	}
}
