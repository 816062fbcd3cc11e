// Package drain times `kubectl drain` of a node running VMs against single live
// migrations.
//
// RunDrain (the `ferry-bench drain` command) starts `ferry up --nodes 3` unless given a
// kubeconfig, creates N VMs on node-1 (the other nodes cordoned meanwhile), times one
// Migrate operation per VM to node-2 and one back as the single-migration baseline, then
// times `kubectl drain node-1` and checks that every VM runs elsewhere with the same
// address and a guest that counted on. DrainTable prints the drain time against N × the
// single median, with one row per VM.
package drain
