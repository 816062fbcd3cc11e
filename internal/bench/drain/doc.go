// Package drain runs `ferry-bench drain` (RunDrain): N VMs on one node of a `ferry up`
// cluster, one Migrate operation per VM to another node and back as the single-migration
// baseline, then `kubectl drain` of the node, timed and checked (every VM runs elsewhere
// with the same address and a guest that counted on). DrainTable prints the drain time
// against N × the single median, with one row per VM.
package drain
