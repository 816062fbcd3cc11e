package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// imageInfo is what Ferry keeps of qemu-img's account of an image file. Format is
// Ferry's (qcow2, raw or iso); qemu-img knows an ISO as raw.
type imageInfo struct {
	Format      string
	VirtualSize int64
	ActualSize  int64
}

// qemuInfo is the part of `qemu-img info --output=json` that Ferry reads.
type qemuInfo struct {
	Format              string `json:"format"`
	VirtualSize         int64  `json:"virtual-size"`
	ActualSize          int64  `json:"actual-size"`
	Encrypted           bool   `json:"encrypted"`
	BackingFilename     string `json:"backing-filename"`
	FullBackingFilename string `json:"full-backing-filename"`
	FormatSpecific      *struct {
		Type string `json:"type"`
		Data struct {
			DataFile string `json:"data-file"`
			Corrupt  bool   `json:"corrupt"`
		} `json:"data"`
	} `json:"format-specific"`
}

// parseQemuInfo reads qemu-img's JSON for an image opened as format and refuses what
// a guest must not get: a file that names another file, an encrypted or corrupt one.
// It repeats checkQcow2Header's checks on qemu-img's reading of the file, so that a
// header trick one parser misses the other still catches.
func parseQemuInfo(out []byte, format string) (qemuInfo, error) {
	var qi qemuInfo
	if err := json.Unmarshal(out, &qi); err != nil {
		return qemuInfo{}, fmt.Errorf("reading qemu-img info: %w", err)
	}
	if qi.Format != format {
		return qemuInfo{}, fmt.Errorf("qemu-img read the image as %q, not %q", qi.Format, format)
	}
	if qi.BackingFilename != "" || qi.FullBackingFilename != "" {
		return qemuInfo{}, fmt.Errorf("the image has a backing file (%s): an image must hold all its data; flatten it with qemu-img convert", qi.BackingFilename+qi.FullBackingFilename)
	}
	if fs := qi.FormatSpecific; fs != nil {
		if fs.Data.DataFile != "" {
			return qemuInfo{}, fmt.Errorf("the image has an external data file (%s): an image must hold all its data; convert it with qemu-img convert -O qcow2", fs.Data.DataFile)
		}
		if fs.Data.Corrupt {
			return qemuInfo{}, fmt.Errorf("the qcow2 image is marked corrupt: repair it with qemu-img check -r all")
		}
	}
	if qi.Encrypted {
		return qemuInfo{}, fmt.Errorf("the image is encrypted: give an unencrypted image")
	}
	if qi.VirtualSize <= 0 {
		return qemuInfo{}, fmt.Errorf("the image is empty (virtual size %d)", qi.VirtualSize)
	}
	return qi, nil
}

// inspect finds an image file's format from its header, then asks qemu-img about it
// with that format stated (-f): qemu-img never probes a file a tenant gave. Anything
// but a self-contained qcow2, a raw disk with a boot sector or an ISO is refused.
func inspect(ctx context.Context, path string) (imageInfo, error) {
	header, err := readHeader(path)
	if err != nil {
		return imageInfo{}, err
	}
	format, err := detectFormat(header)
	if err != nil {
		return imageInfo{}, err
	}
	qemuFormat := format
	switch format {
	case "vdi", "vhdx":
		return imageInfo{}, fmt.Errorf("a %s image must be converted to qcow2 first", format)
	case FormatQcow2:
		if err := checkQcow2Header(header); err != nil {
			return imageInfo{}, err
		}
	case FormatISO:
		qemuFormat = FormatRaw
	case FormatRaw:
		if err := checkBootSector(path); err != nil {
			return imageInfo{}, err
		}
	}
	out, err := run(ctx, "qemu-img", "info", "-U", "-f", qemuFormat, "--output=json", path)
	if err != nil {
		return imageInfo{}, err
	}
	qi, err := parseQemuInfo(out, qemuFormat)
	if err != nil {
		return imageInfo{}, err
	}
	return imageInfo{Format: format, VirtualSize: qi.VirtualSize, ActualSize: qi.ActualSize}, nil
}

// convertToQcow2 turns a vdi or vhdx image at path into a qcow2 file in its place (with
// the format stated to qemu-img, and refused first if it names another file). It
// leaves any other format as it is.
func convertToQcow2(ctx context.Context, path string) error {
	header, err := readHeader(path)
	if err != nil {
		return err
	}
	format, err := detectFormat(header)
	if err != nil || (format != "vdi" && format != "vhdx") {
		return err
	}
	out, err := run(ctx, "qemu-img", "info", "-U", "-f", format, "--output=json", path)
	if err != nil {
		return err
	}
	if _, err := parseQemuInfo(out, format); err != nil {
		return err
	}
	tmp := path + ".qcow2"
	defer os.Remove(tmp)
	if _, err := run(ctx, "qemu-img", "convert", "-q", "-f", format, "-O", FormatQcow2, path, tmp); err != nil {
		return fmt.Errorf("converting the %s image to qcow2: %w", format, err)
	}
	return os.Rename(tmp, path)
}

// diskSize reads the virtual size of a disk Ferry made itself (a qcow2 overlay, whose
// backing file is by design its image).
func diskSize(ctx context.Context, path string) (int64, error) {
	out, err := run(ctx, "qemu-img", "info", "-U", "-f", FormatQcow2, "--output=json", path)
	if err != nil {
		return 0, err
	}
	var qi qemuInfo
	if err := json.Unmarshal(out, &qi); err != nil {
		return 0, fmt.Errorf("reading qemu-img info: %w", err)
	}
	return qi.VirtualSize, nil
}

// createOverlay makes a qcow2 disk at path of size bytes, backed by the image at base
// when there is one. The guest sees size bytes: the part past the image's end reads as
// zeroes, and cloud-init's growpart grows the root partition into it.
func createOverlay(ctx context.Context, path, base, baseFormat string, size int64) error {
	args := []string{"create", "-q", "-f", DiskFormat, "-o", "cluster_size=65536"}
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
