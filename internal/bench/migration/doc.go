// Package migration runs `ferry-bench migration` (RunMigration): Evict operations of a
// benchmark VM on a `ferry up` cluster, idle and while its guest rewrites memory, each
// timed end to end and stage by stage and checked (the guest counts on, it did not
// reboot), interleaved with migrations of the same guest between two bare QEMU processes
// on loopback with Ferry's parameters (rawBench), the floor Ferry is held against.
package migration
