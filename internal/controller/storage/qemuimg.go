package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// imageInfo is what qemu-img tells about an image file.
type imageInfo struct {
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	ActualSize  int64  `json:"actual-size"`
}

// inspect reads an image's format and size. A file that is neither a raw disk with a
// boot sector nor a qcow2 image is refused: booting it could only fail later, silently.
func inspect(ctx context.Context, path string) (imageInfo, error) {
	out, err := run(ctx, "qemu-img", "info", "-U", "--output=json", path)
	if err != nil {
		return imageInfo{}, err
	}
	var info imageInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return imageInfo{}, fmt.Errorf("reading qemu-img info: %w", err)
	}
	switch info.Format {
	case "qcow2":
	case "raw":
		if err := checkBootSector(path); err != nil {
			return imageInfo{}, err
		}
	default:
		return imageInfo{}, fmt.Errorf("image format %q is not supported: use raw or qcow2", info.Format)
	}
	return info, nil
}

// createOverlay makes a qcow2 disk at path backed by the image at base, at least size bytes.
func createOverlay(ctx context.Context, path, base, baseFormat string, size int64) error {
	args := []string{"create", "-q", "-f", "qcow2", "-o", "cluster_size=65536"}
	if base != "" {
		args = append(args, "-b", base, "-F", baseFormat)
	}
	args = append(args, path)
	if size > 0 {
		args = append(args, fmt.Sprint(size))
	}
	_, err := run(ctx, "qemu-img", args...)
	return err
}

func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%s %s: %s", name, args[0], msg)
	}
	return out, nil
}
