// Package cli holds `ferry v`, the VM verbs: start, stop, restart, evict, migrate and
// console. Each verb creates a VirtualMachineOperation, like a user would with kubectl,
// and --wait follows it to its end.
package cli
