// Package migration runs the Evict and Migrate VirtualMachineOperations: live migration of a
// running VM to another node. It is an explicit state machine (the phase is recorded in the
// operation's status.migration, so a restarted controller resumes): check preconditions and
// take a slot, create a target launcher pod that the scheduler places with the VM's
// placement on another node, wait for its QEMU to listen, ask the source node's agent to
// migrate (through annotations on the source pod), follow the progress, and on completion
// hand the VM to the target pod. Failure or cancel (deleting the operation) removes the
// target and leaves the VM running on the source. It never starts or stops VMs otherwise.
//
// The operation's status reads as Deckhouse's: the Completed condition's reason names the
// step (MigrationPending, TargetScheduling, TargetPreparing, Syncing, SourceSuspended,
// TargetResumed, Completed) or the failure, and status.progress is Deckhouse's percentage
// (progress.go); the message and status.migration carry Ferry's details. A Migrate whose
// node selector picks no node that fits the VM is refused before any pod is made
// (target.go, with the evacuation package's placement judgement).
package migration
