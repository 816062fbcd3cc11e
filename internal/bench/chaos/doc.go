// Package chaos runs `ferry-bench chaos` (RunChaos): random faults injected during
// migrations, drains and failovers on one `ferry up` cluster of simulated nodes (`ferry
// sim-nodes`) or, with ChaosOptions.Real, real nodes running QEMU guests; after each
// trial it checks that every VM runs exactly once, kept its address and disk, never ran
// in two places at once, and that every operation ended.
package chaos
