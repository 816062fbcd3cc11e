package nodeimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

//go:embed build-node-base.sh
var baseScript []byte

// DefaultCacheDir is where base layers are kept: outside any checkout, so that a fresh
// clone or another worktree reuses a built layer. FERRY_IMAGE_CACHE overrides it.
const DefaultCacheDir = "/var/cache/ferry/images"

// CacheDir is the directory EnsureBase uses.
func CacheDir() string {
	if d := os.Getenv("FERRY_IMAGE_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// BaseName is the cached layer's name without its extension: it changes with the build
// script, so an edited recipe builds a new layer instead of reusing one it would not
// make any more. The script computes the same name from its own bytes (sha256sum "$0").
func BaseName() string {
	sum := sha256.Sum256(baseScript)
	return "node-base-" + hex.EncodeToString(sum[:])[:12]
}

// baseLayer is what the script writes beside the layer (node-base-<hash>.json): the
// layer's descriptor and its diffID, so that writing an image never hashes it again.
type baseLayer struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	DiffID    string `json:"diffID"`
}

// EnsureBase returns the path of the base layer (an uncompressed tar of a Debian 12
// root filesystem with qemu-system-x86, qemu-utils and ca-certificates), building it
// first when the cache has none for this version of the recipe: as root, ~1.5-2.5
// minutes, with packages from the Debian mirror this machine's apt uses. The build's
// progress goes to log (nil: nowhere). Concurrent callers wait for one build (flock);
// an interrupted build leaves nothing that a later call would use.
func EnsureBase(ctx context.Context, log io.Writer) (string, error) {
	dir, err := filepath.Abs(CacheDir()) // the script prints an absolute path
	if err != nil {
		return "", err
	}
	layer := filepath.Join(dir, BaseName()+".tar")
	if _, err := readBase(dir); err == nil {
		return layer, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// The script names the layer after its own hash: run these exact bytes.
	f, err := os.CreateTemp(dir, ".build-node-base-*.sh")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(baseScript); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if log == nil {
		log = io.Discard
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", f.Name(), dir)
	cmd.Stdout, cmd.Stderr = &stdout, io.MultiWriter(log, &stderr)
	// Cancelled, the whole build stops: debootstrap, apt and tar are the script's
	// children, and they hold its lock while they run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("building the node image's base layer: %w", context.Cause(ctx))
		}
		return "", fmt.Errorf("building the node image's base layer with %s: %v: %s", f.Name(), err, lastLines(stderr.String(), 20))
	}
	if got := strings.TrimSpace(stdout.String()); got != layer {
		return "", fmt.Errorf("building the node image's base layer: the script made %q, expected %q", got, layer)
	}
	if _, err := readBase(dir); err != nil {
		return "", fmt.Errorf("building the node image's base layer: %v", err)
	}
	return layer, nil
}

// readBase reads the cached layer's descriptor and checks that the layer beside it has
// the size it records (a cheap check; the digest is trusted, as the build wrote both).
func readBase(dir string) (baseLayer, error) {
	var b baseLayer
	name := filepath.Join(dir, BaseName())
	data, err := os.ReadFile(name + ".json")
	if err != nil {
		return b, err
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return b, fmt.Errorf("%s.json: %v", name, err)
	}
	if !validDigest(b.Digest) || !validDigest(b.DiffID) || b.MediaType == "" {
		return b, fmt.Errorf("%s.json: not a layer descriptor: %s", name, bytes.TrimSpace(data))
	}
	fi, err := os.Stat(name + ".tar")
	if err != nil {
		return b, err
	}
	if fi.Size() != b.Size {
		return b, fmt.Errorf("%s.tar has %d bytes, its descriptor says %d", name, fi.Size(), b.Size)
	}
	return b, nil
}

func validDigest(d string) bool {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil && strings.ToLower(hexPart) == hexPart
}

// lastLines keeps a failed build's error readable: debootstrap and apt say a lot first.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
