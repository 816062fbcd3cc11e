// Package power runs the Start, Stop and Restart VirtualMachineOperations. It only records
// what the user asked for on the VM (its power-state annotation) or, for Restart, ends the
// VM's current launcher pod; the VM controller does the rest. It does not touch migrations
// (Evict and Migrate have their own controller).
package power
