// Package storage holds the ClusterVirtualImage and VirtualDisk controllers. Images are
// imported into the shared storage directory that every node reaches (under `ferry up`:
// a directory in the state directory) and checked; a disk is a qcow2 file backed by its
// image and as large as its persistentVolumeClaim.size, so creating one is instant and
// never copies the image.
//
// An image is data, never a path to a host file: its format (qcow2, raw or ISO) is read
// from its header by this package, and qemu-img is always told that format, never left
// to probe; a qcow2 that names another file (a backing file, an external data file) is
// refused before qemu-img opens it, and again from qemu-img's account of it. The header
// checks are hand-written because they are a few fixed offsets (QEMU's
// docs/interop/qcow2.txt, ISO 9660's volume descriptor) that no Go library exposes alone.
//
// Downloads report progress in status, check an optional checksum, stop at a size cap,
// and are tried again with back-off when the transport fails; a file that is itself
// wrong (checksum, size, format) fails the image for good.
//
// The package does not know about VMs beyond the disk's attachment record, which the VM
// controller owns.
package storage
