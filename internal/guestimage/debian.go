package guestimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed build-debian-guest.sh
var debianScript []byte

// DefaultCacheDir is where Debian guest images are kept: outside any checkout, so that a
// fresh clone or another worktree reuses a built image. FERRY_GUEST_CACHE overrides it.
const DefaultCacheDir = "/var/cache/ferry/guests"

// DebianCacheDir is the directory EnsureDebian uses.
func DebianCacheDir() string {
	if d := os.Getenv("FERRY_GUEST_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// DebianFileName is the cached image's name: it changes with the build script, so an
// edited script builds a new image instead of reusing one it would not make any more.
// The script computes the same name from its own bytes (sha256sum of itself).
func DebianFileName() string {
	sum := sha256.Sum256(debianScript)
	return "debian-12-" + hex.EncodeToString(sum[:])[:12] + ".qcow2"
}

// EnsureDebian returns the path of the Debian 12 cloud image (compressed qcow2, 2 GiB
// virtual, cloud-init with the NoCloud datasource, qemu-guest-agent), building it first
// when the cache has none for this version of the script: as root, ~3 minutes, with
// packages from deb.debian.org.
func EnsureDebian(ctx context.Context) (string, error) {
	dir := DebianCacheDir()
	img := filepath.Join(dir, DebianFileName())
	if fi, err := os.Stat(img); err == nil && fi.Size() > 0 {
		return img, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// The script names the image after its own hash: run these exact bytes.
	f, err := os.CreateTemp(dir, ".build-debian-guest-*.sh")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(debianScript); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", f.Name(), dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the Debian guest image with %s: %v: %s", f.Name(), err, lastLines(stderr.String(), 20))
	}
	if got := strings.TrimSpace(stdout.String()); got != img {
		return "", fmt.Errorf("building the Debian guest image: the script made %q, expected %q", got, img)
	}
	return img, nil
}

// lastLines keeps a failed build's error readable: apt and mmdebstrap say a lot first.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
