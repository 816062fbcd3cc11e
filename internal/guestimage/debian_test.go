package guestimage

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// The script names its image after the SHA-256 of its own file (sha256sum "$0"), and
// EnsureDebian looks for the name computed from the embedded bytes: `make debian-guest`
// (which runs the file) and the tests (which run the embedded copy) must agree.
func TestDebianFileNameMatchesTheScriptFile(t *testing.T) {
	b, err := os.ReadFile("build-debian-guest.sh")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	want := "debian-12-" + hex.EncodeToString(sum[:])[:12] + ".qcow2"
	if got := DebianFileName(); got != want {
		t.Errorf("DebianFileName() = %s, the script file names it %s", got, want)
	}
}

// A cached image is returned as it is: no build, no root, no network.
func TestEnsureDebianReusesTheCache(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("FERRY_GUEST_CACHE", dir)
	img := filepath.Join(dir, DebianFileName())
	if err := os.WriteFile(img, []byte("QFI\xfb"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := EnsureDebian(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got != img {
		t.Errorf("EnsureDebian = %s, want the cached %s", got, img)
	}
}
