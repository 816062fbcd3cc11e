// Package restore runs the VirtualMachineOperations of type Restore and Clone.
//
// Clone (clone.go) takes a VirtualMachineSnapshot of the VM, owned by the operation
// (requiredConsistency true: the clone of a running VM waits for it to stop, saying so),
// then makes a new disk per disk from its disk snapshot and a new VM, named as spec.clone
// says (nameReplacement, then namePrefix/nameSuffix), with a new address (so a new MAC:
// Ferry derives a VM's MAC from its address) and none of the source's labels. New names
// that are taken or invalid fail it before anything is made; DryRun plans from the VM as it
// is, making nothing.
//
// Restore puts a Stopped VM
// back to a VirtualMachineSnapshot of it. Each disk the snapshot holds is deleted and made
// again, under the same name, from its VirtualDiskSnapshot (dataSource objectRef kind
// VirtualDiskSnapshot, as Deckhouse's restored disks show), then the VM's spec is set back
// to the snapshot's; the VM controller then starts the VM if its runPolicy says so.
//
// The VM must be Stopped when the operation starts: a running VM fails the operation at
// once, with nothing changed and the VM left running (Ferry does not stop it for the
// user; a Stop operation, or for runPolicy AlwaysOn a change of runPolicy, does). Every
// check (the snapshot Ready and of this VM by UID, no disk held by another VM, each disk
// snapshot Ready, the images the VM names) runs before anything changes; a conflict fails
// the operation with status.resources saying which object stands in the way. DryRun runs
// the checks only.
//
// A restored disk carries the annotation AnnotationRestoredBy with the operation's UID,
// so that a controller restart knows the disk is the new one and does not delete it again.
//
// It must not touch the snapshot, its Secret or its disk snapshots: it reads them.
package restore
