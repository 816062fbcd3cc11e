// Package storage holds the ClusterVirtualImage, VirtualImage and VirtualDisk
// controllers and the upload endpoint. Images are imported into the shared storage
// directory that every node reaches (under `ferry up`: a directory in the state
// directory) and checked; a disk made from an image is a qcow2 file backed by it and as
// large as its persistentVolumeClaim.size, so creating one is instant and never copies
// the image (the image's file stays while such a disk exists). A disk with an HTTP or
// Upload source is imported as an image is, then written into a qcow2 file of its own.
//
// Every source (HTTP, ObjectRef, Upload) is one case of importer.open, and its bytes take
// the one path importer.fetch: size cap, checksum, format checks. An upload is received
// by the endpoint (upload.go), checked there so that the uploader hears why it is
// refused, and left in the storage's uploads/ for the object's controller, which imports
// it again through the same path and alone writes the object's status.
//
// An image is data, never a path to a host file: its format (qcow2, raw or ISO) is read
// from its header by this package, and qemu-img is always told that format, never left
// to probe; a qcow2 that names another file (a backing file, an external data file) is
// refused before qemu-img opens it, and again from qemu-img's account of it. The header
// checks are hand-written because they are a few fixed offsets (QEMU's
// docs/interop/qcow2.txt, ISO 9660's volume descriptor) that no Go library exposes alone.
//
// A qcow2 header extension that could name a file (a data file, a backing format) is
// refused too, and so is a file with the qcow2 magic and a bogus header: it is never
// imported as raw. An image's file is found from its name under the storage, never from
// a status field.
//
// Downloads report progress in status, check an optional checksum, stop at a size cap
// (on the announced length before reading, else while reading; no transparent gunzip),
// follow redirects only to http(s), and are tried again with back-off when the transport
// fails; a file that is itself wrong (checksum, size, format) fails the image for good.
// file:// URLs read only regular files in the directories the controller's
// --image-source-dirs lists (none by default), once symlinks are resolved, and never a
// file of the storage (tenants' disks).
//
// A ContainerImage source is a registry's image whose layers hold one file under /disk/
// (registry.go pulls it, containerdisk.go finds the file): its bytes go through the same
// copier and checks as a download's, and the stream reports EOF only once every layer
// matched its digest. See registry.go for the pull's rules (TLS, credentials, caps).
//
// A VirtualDiskSnapshot (snapshot.go) is a standalone qcow2 copy of a disk under
// snapshots/, taken while no running VM uses the disk (qemu-img then holds QEMU's image
// locks), or, with requiredConsistency false, read past the locks from a running VM's disk
// and marked inconsistent. Disks and images made from a snapshot are imported from its
// file through the importer, like any other source.
//
// The package does not know about VMs beyond the disk's attachment record, which the VM
// controller owns, and a VM's phase (a resize and a consistent snapshot wait for Stopped).
package storage
