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

//go:embed build-guest-image.sh
var script []byte

// FileName is the image's name in its directory.
const FileName = "ferry-guest.img"

// Ensure builds dir/ferry-guest.img unless it is up to date and returns its path.
func Ensure(ctx context.Context, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// The script judges freshness against its own file: keep that file stable.
	path := filepath.Join(dir, "build-guest-image.sh")
	if old, err := os.ReadFile(path); err != nil || !bytes.Equal(old, script) {
		if err := os.WriteFile(path, script, 0o755); err != nil {
			return "", err
		}
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", path, dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the guest image: %v: %s", err, strings.TrimSpace(out.String()))
	}
	return filepath.Join(dir, FileName), nil
}

// CacheDir is where EnsureCached keeps the image: $FERRY_GUEST_DIR, else a directory in
// the user's cache named after the embedded script's hash. The script judges an image
// fresh by modification times, which do not say whose script built it: in one shared
// directory, a checkout with an older script (another worktree, another branch) would
// take the image of a newer one.
func CacheDir() string {
	if d := os.Getenv("FERRY_GUEST_DIR"); d != "" {
		return d
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256(script)
	return filepath.Join(cache, "ferry", "guest", hex.EncodeToString(sum[:])[:12])
}

// EnsureCached is Ensure in CacheDir(): the tests' guest, built once per script.
func EnsureCached(ctx context.Context) (string, error) {
	return Ensure(ctx, CacheDir())
}
