package guestimage

import (
	"bytes"
	"context"
	_ "embed"
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
