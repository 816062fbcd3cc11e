package storage

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// ImagePath is where an imported image's file is. Readers of an image (disks made from
// it, VMs that boot it) find it here, from its name, rather than in its status.path: a
// status is only as trustworthy as whoever may write it, and a path there could name any
// host file.
func ImagePath(root, name string) string {
	return filepath.Join(root, "images", name+".img")
}

// VirtualImagePath is where an imported VirtualImage's file is: under its namespace,
// named by its name and the start of its UID, as DiskPath names a disk's. Like ImagePath,
// readers derive it from the image's identity, never from its status.
func VirtualImagePath(root string, vi *v1alpha2.VirtualImage) string {
	uid := string(vi.UID)
	return filepath.Join(root, "virtualimages", vi.Namespace, fmt.Sprintf("%s-%s.img", vi.Name, uid[:min(8, len(uid))]))
}

// imageFile is the file of an image of either kind.
func imageFile(root string, img client.Object) string {
	if vi, ok := img.(*v1alpha2.VirtualImage); ok {
		return VirtualImagePath(root, vi)
	}
	return ImagePath(root, img.GetName())
}

// DiskPath is where a disk's file is: under its namespace, named by the disk's name and
// the start of its UID (a disk deleted and created again gets a new file). Like
// ImagePath, it is derived from the disk's identity, never read from its status.
func DiskPath(root string, d *v1alpha2.VirtualDisk) string {
	uid := string(d.UID)
	return filepath.Join(root, "disks", d.Namespace, fmt.Sprintf("%s-%s.qcow2", d.Name, uid[:min(8, len(uid))]))
}

// DiskFormat is the format of every disk's file: the disk controller creates each one as
// a qcow2 overlay (createOverlay).
const DiskFormat = FormatQcow2

// ImageFormat reads the format of an imported image's file at path from its header, for
// readers that must not take it from the image's status.format: qcow2, raw or iso. The
// file must be a regular file (not a link or a device), and a qcow2 one that names
// another file is refused, as at import.
func ImageFormat(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	header, err := readHeader(path)
	if err != nil {
		return "", err
	}
	format, err := detectFormat(header)
	if err != nil {
		return "", err
	}
	switch format {
	case FormatQcow2:
		if err := checkQcow2Header(header); err != nil {
			return "", err
		}
	case FormatRaw, FormatISO:
	default:
		return "", fmt.Errorf("the image's file is in %s format, which an imported image never is", format)
	}
	return format, nil
}

// SnapshotPath is where a VirtualDiskSnapshot's file is: under its namespace, named by
// its name and the start of its UID, as DiskPath names a disk's. Readers (disks made
// from the snapshot) derive it from the snapshot's identity; the snapshot's status
// names no path.
func SnapshotPath(root string, s *v1alpha2.VirtualDiskSnapshot) string {
	uid := string(s.UID)
	return filepath.Join(root, "snapshots", s.Namespace, fmt.Sprintf("%s-%s.qcow2", s.Name, uid[:min(8, len(uid))]))
}
