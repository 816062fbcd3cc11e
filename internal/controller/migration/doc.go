// Package migration runs the Evict and Migrate VirtualMachineOperations: live migration of a
// running VM to another node. It is an explicit state machine (the phase is recorded in the
// operation's status.migration, so a restarted controller resumes): check preconditions and
// take a slot, create a target launcher pod that the scheduler places with the VM's
// placement on another node, wait for its QEMU to listen, ask the source node's agent to
// migrate (through annotations on the source pod), follow the progress, and on completion
// hand the VM to the target pod. Failure or cancel (deleting the operation) removes the
// target and leaves the VM running on the source. It never starts or stops VMs otherwise.
package migration
