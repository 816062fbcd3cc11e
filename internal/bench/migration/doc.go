// Package migration measures Ferry's live migration against bare QEMU.
//
// RunMigration (the `ferry-bench migration` command) starts its own `ferry up --nodes 2`
// unless given a kubeconfig, creates a benchmark VM from the ferry-guest image and, for an
// idle guest and a guest that keeps rewriting some MiB of its memory, evicts it back and
// forth a number of times. For each Evict operation it records:
//
//   - end-to-end time: from just before the VirtualMachineOperation is created until the
//     benchmark sees it Completed (polled every 100 ms, so within about 0.1 s);
//   - QEMU's total migration time and downtime, from status.migration.transferMs and
//     downtimeMs;
//   - whether the guest went on counting: its heartbeat ("CNT n" on the serial console)
//     must pass the last value the source printed within 10 s of completion, and the
//     target's serial log must not show "FERRY-GUEST BOOTED". Otherwise the migration is a
//     post-migration failure.
//
// It then deletes the VM and migrates a guest of the same size between two bare QEMU
// processes on loopback (package hypervisor), with the parameters Ferry's controller sent
// to the source node (bandwidth, downtime limit, auto-converge) and the same dirtying, the
// same number of times. The raw "end-to-end" time is from the migrate command until the
// destination runs.
//
// The results are printed as a table (table.go) with medians and maxima, the ratio of
// Ferry's end-to-end time to the raw transfer time, their difference, and failure counts.
package migration
