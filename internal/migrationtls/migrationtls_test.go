package migrationtls

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

func testCA(t *testing.T, now time.Time) *CA {
	t.Helper()
	certPEM, keyPEM, err := NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCredentialsCheck(t *testing.T) {
	now := time.Now()
	ca, other := testCA(t, now), testCA(t, now)
	c, err := ca.NodeCredentials("node-1", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check("node-1", now); err != nil {
		t.Errorf("fresh credentials: %v", err)
	}
	if err := c.Check("", now); err != nil {
		t.Errorf("no node to check: %v", err)
	}
	foreign, err := Parse(c.CertPEM, c.KeyPEM, other.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    *Credentials
		node string
		at   time.Time
		says string
	}{
		{"another node's", c, "node-2", now, `is for "system:ferry-node:node-1", not node node-2`},
		{"expired", c, "node-1", now.Add(2 * time.Hour), "expired at"},
		{"not yet valid", c, "node-1", now.Add(-time.Hour), "not valid before"},
		{"another CA", foreign, "node-1", now, "does not verify against the migration CA"},
	} {
		err := tc.c.Check(tc.node, tc.at)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.says)
		}
	}
	// A key that is not the certificate's.
	d, _ := ca.NodeCredentials("node-1", now, time.Hour)
	if _, err := Parse(c.CertPEM, d.KeyPEM, c.CAPEM); err == nil {
		t.Error("Parse took a key that is not the certificate's")
	}
	if _, err := Parse(c.CertPEM, c.KeyPEM, []byte("junk")); err == nil {
		t.Error("Parse took no CA")
	}
}

// The directory is private, and holds what QEMU reads for both roles.
func TestWriteLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), DirName)
	if _, err := Load(dir); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("Load of nothing: %v, want ErrNoCredentials", err)
	}
	now := time.Now()
	c, err := testCA(t, now).NodeCredentials("node-1", now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, c); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, %v; want 0700", st.Mode(), err)
	}
	for _, f := range []string{hypervisor.TLSCACertFile, hypervisor.TLSServerCertFile, hypervisor.TLSServerKeyFile, hypervisor.TLSClientCertFile, hypervisor.TLSClientKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want 0600", f, st, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 5 {
		t.Errorf("%d files in the directory, want 5 (no leftovers)", len(entries))
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Check("node-1", now); err != nil || string(got.KeyPEM) != string(c.KeyPEM) {
		t.Errorf("loaded credentials: %v", err)
	}
	os.WriteFile(filepath.Join(dir, hypervisor.TLSServerKeyFile), []byte("junk"), 0o600)
	if _, err := Load(dir); err == nil || errors.Is(err, ErrNoCredentials) {
		t.Errorf("Load of a broken key: %v", err)
	}
}

func TestNamesAndRenewal(t *testing.T) {
	for cn, want := range map[string]string{"system:ferry-node:node-1": "node-1", "system:ferry-node:": "", "system:node:node-1": "", "system:ferry-node:a,b": ""} {
		if got, _ := NodeOf(cn); got != want {
			t.Errorf("NodeOf(%q) = %q, want %q", cn, got, want)
		}
	}
	now := time.Now()
	c, err := testCA(t, now).NodeCredentials("node-1", now, 9*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// NotBefore is backdated by the clock-skew allowance.
	life := c.Cert.NotAfter.Sub(c.Cert.NotBefore)
	if got, want := RenewAt(c.Cert), c.Cert.NotBefore.Add(life*2/3); !got.Equal(want) || got.Before(now.Add(5*time.Hour)) {
		t.Errorf("RenewAt %v, want %v (two thirds of %v)", got, want, life)
	}
}
