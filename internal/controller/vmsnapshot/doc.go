// Package vmsnapshot takes VirtualMachineSnapshots: one VirtualDiskSnapshot of each
// VirtualDisk the VM names in spec.blockDeviceRefs (taken by the storage package's snapshot
// controller, owned by the VM snapshot), and a Secret, owned by the VM snapshot, that keeps
// what a restore or a clone needs besides the disks' contents: the VM's spec and UID, its
// disks' specs and, with keepIPAddress Always, its VirtualMachineIPAddress (Content).
//
// The VM's configuration is recorded in the same reconcile that asks for the disk
// snapshots, once the VM and its disks are ready and (requiredConsistency true) the VM is
// Stopped; from then on the snapshot only follows its disk snapshots.
//
// It must not touch the VM or its disks: it reads them. Restoring and cloning are the
// restore package's.
package vmsnapshot
