// Package storage holds the ClusterVirtualImage and VirtualDisk controllers. Images are
// imported into the shared storage directory that every node reaches (under `ferry up`:
// a directory in the state directory) and checked with qemu-img; a disk is a qcow2 file
// backed by its image, so creating one is instant and never copies the image.
// The package does not know about VMs beyond the disk's attachment record, which the VM
// controller owns.
package storage
