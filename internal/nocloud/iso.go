package nocloud

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

const sector = 2048

// WriteISO writes an ISO 9660 image with the given volume label and files in its root
// directory to path. The image appears at path whole or not at all (written beside it,
// then renamed), so a QEMU that opens path never reads half an image.
func WriteISO(path, label string, files []File) (err error) {
	dir := filepath.Dir(path)
	// go-diskfs builds the image from a directory tree it then removes.
	ws, err := os.MkdirTemp(dir, ".seed-tree-")
	if err != nil {
		return fmt.Errorf("making the seed's work directory: %w", err)
	}
	defer os.RemoveAll(ws)
	// The root directory's mode is what Rock Ridge shows the guest: readable by all.
	if err := os.Chmod(ws, 0o755); err != nil {
		return err
	}
	size := int64(64 * sector) // volume descriptors, path tables, directories
	for _, f := range files {
		if err := checkName(f.Name); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(ws, f.Name), f.Data, 0o644); err != nil {
			return fmt.Errorf("writing %s to the seed's work directory: %w", f.Name, err)
		}
		size += (int64(len(f.Data)) + sector - 1) / sector * sector
	}

	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp")
	_ = os.Remove(tmp) // a leftover of a crashed write
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	b, err := file.CreateFromPath(tmp, size)
	if err != nil {
		return err
	}
	defer b.Close()
	iso, err := iso9660.Create(b, size, 0, sector, ws)
	if err != nil {
		return fmt.Errorf("creating the ISO image: %w", err)
	}
	if err := iso.Finalize(iso9660.FinalizeOptions{RockRidge: true, Joliet: true, VolumeIdentifier: label}); err != nil {
		return fmt.Errorf("writing the ISO image: %w", err)
	}
	if err := tidyPVD(tmp, label); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// tidyPVD pads the volume label with spaces, as ISO 9660 wants (go-diskfs pads with NULs,
// which blkid forgives but other readers need not), and cuts the image to the volume it
// holds, so the guest sees no trailing zeros. It syncs the image before it is renamed.
func tidyPVD(path, label string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	pvd := make([]byte, sector)
	if _, err := f.ReadAt(pvd, 16*sector); err != nil {
		return fmt.Errorf("reading the primary volume descriptor: %w", err)
	}
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return errors.New("the image has no primary volume descriptor")
	}
	id := pvd[40:72]
	for i := range id {
		id[i] = ' '
	}
	copy(id, label)
	if _, err := f.WriteAt(id, 16*sector+40); err != nil {
		return err
	}
	if err := f.Truncate(int64(binary.LittleEndian.Uint32(pvd[80:84])) * sector); err != nil {
		return err
	}
	return f.Sync()
}

// ReadISO reads back an image's label and the files of its root directory, by their
// Rock Ridge names.
func ReadISO(path string) (label string, files map[string][]byte, err error) {
	b, err := file.OpenFromPath(path, true)
	if err != nil {
		return "", nil, err
	}
	defer b.Close()
	iso, err := iso9660.Read(b, 0, 0, sector)
	if err != nil {
		return "", nil, fmt.Errorf("reading the ISO image: %w", err)
	}
	entries, err := iso.ReadDir(".")
	if err != nil {
		return "", nil, err
	}
	files = map[string][]byte{}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := fs.ReadFile(iso, e.Name())
		if err != nil {
			return "", nil, fmt.Errorf("reading %s: %w", e.Name(), err)
		}
		files[e.Name()] = data
	}
	return strings.TrimRight(iso.Label(), " \x00"), files, nil
}
