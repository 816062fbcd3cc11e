// Package vmbda runs VirtualMachineBlockDeviceAttachments: a disk or an image hot-plugged
// into a VM, as in Deckhouse.
//
// The controller judges each attachment (package vm: JudgeAttachments for conflicts and
// the VM's capacity, ResolveAttachment for the block device), takes a VirtualDisk's hold
// for the VM (status.attachedToVirtualMachines, the one holder a disk has) and shows in the
// attachment's status what the VM has: Attached only once the VM's node agent reports that
// QEMU has the device. The VM controller does the hot-plugging itself (vm/hotplug.go): it
// asks the VM's launcher pod for the disks of its admitted attachments, and starts the VM
// with them, so an attachment outlives restarts.
//
// Phases: Pending (the VM does not exist or does not run: the disk is attached when it
// starts; the block device is not ready; the VM has no room), InProgress (asked for, not
// in QEMU yet, or the VM migrates), Attached, Failed (another attachment or the VM's spec
// has the device, the disk is another VM's, QEMU refused it, a kind Ferry does not attach
// yet) and Terminating: a deleted attachment keeps its finalizer until no pod of the VM
// has the disk any more, then gives up the disk's hold.
package vmbda
