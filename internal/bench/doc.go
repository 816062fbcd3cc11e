// Package bench is the shared core of Ferry's benchmarks (`ferry-bench`); each benchmark
// is a package below it:
//
//   - migration: Ferry's live migration against bare QEMU (`ferry-bench migration`);
//   - drain: `kubectl drain` of a node running VMs against single migrations;
//   - failover: a VM's return after its node fails, and false fencing under load;
//   - scale: the control plane with simulated nodes;
//   - chaos: random faults during migrations, drains and failovers, and the invariants;
//   - report: all of them in turn, written to docs/benchmarks.md.
//
// What they share is here: a cluster to run on (Cluster, OpenCluster: a `ferry up` the
// benchmark starts, or one given by kubeconfig; StartSimNodes; FerryNode's node faults),
// a benchmark VM driven through Ferry (FerryVM: image, VM and disk, Evict or Migrate
// operations, each measured as a Sample with its stage Timeline), the guest's serial
// console (TypeLine, WaitCounting, HeartbeatCheck), the VM's instances and QEMU processes
// on the machine (InstanceWatch, ProcessWatch), and the figures (Series, Summarize,
// TimelineTable, Pct).
package bench
