// Command ferry-bench measures Ferry. `ferry-bench migration` compares Ferry's live
// migration (Evict operations on a `ferry up` cluster) with bare QEMU migrations of the
// same guest; `ferry-bench drain` times `kubectl drain` of a node running VMs against
// single live migrations; see package internal/bench.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ferryvm/ferry/internal/bench"
)

func main() {
	ctrllog.SetLogger(logr.Discard()) // the client's own logging is noise here
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C ends the benchmark at once
	}()
	root := &cobra.Command{
		Use:          "ferry-bench",
		Short:        "Benchmarks of Ferry",
		SilenceUsage: true,
	}
	root.AddCommand(migrationCommand(), drainCommand())
	if err := root.ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

func migrationCommand() *cobra.Command {
	o := bench.DefaultOptions()
	cmd := &cobra.Command{
		Use:   "migration",
		Short: "Compare Ferry's live migration with bare QEMU migrations of the same guest",
		Long: `Measures live migration through Ferry against the QEMU floor.

Unless --kubeconfig points at a running cluster, starts its own
` + "`ferry up --nodes 2 --port 17443 --sample-vm=false`" + ` (in --state-dir or a temporary
directory; only one ` + "`ferry up`" + ` can run on a machine, see --wait-other). It creates
the VM ferry-bench (--memory, 1 core) with its own VirtualDisk from the ClusterVirtualImage
ferry-guest (created from the locally built guest image when missing) and waits until it
runs and its guest counts ("CNT n" on the serial console).

For each scenario, idle guest and guest rewriting --dirty-mib MiB in a loop ("dirty N"
typed on its console, "stop" at the end; at most half the memory and 96 MiB less than it), it creates
--runs Evict operations one after another and records:
  e2e       from creating the VirtualMachineOperation to seeing it Completed (±0.1 s)
  transfer  QEMU's total migration time (status.migration.transferMs)
  downtime  QEMU's switchover pause (status.migration.downtimeMs)
and whether the guest counted on: within 10 s of completion the target's serial log
must show a counter above the source's last one and no "FERRY-GUEST BOOTED". A
migration after which it does not is a post-migration failure.

Then it deletes the VM and, with the same memory size, dirtying and migration
parameters (those Ferry's controller sent to the source node: 1 GiB/s, 300 ms and no
auto-converge by default), migrates a guest between two bare QEMU processes on loopback
the same number of times (raw e2e: migrate command until the destination runs).

It prints a table of medians and maxima (ms), Ferry's e2e over the raw transfer time,
their difference, and failure counts, followed by each failure's details (operation
status and the lines of STATE/logs naming it). Ctrl-C stops the benchmark, deletes the
VM and stops the cluster it started; the temporary state directory is kept when
something failed.

Never more than two guests run at once (the VM and its migration target, or the two
raw QEMU processes).`,
		Example: `  ferry-bench migration --runs 2 --memory 256Mi
  ferry-bench migration --runs 50 --memory 128Mi --skip-raw     # failure-rate study
  ferry-bench migration --kubeconfig /var/lib/ferry/control-plane/admin.kubeconfig`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			return bench.RunMigration(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.FerryBin, "ferry", o.FerryBin, "ferry binary that runs the cluster")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "benchmark the running cluster of this kubeconfig instead of starting one")
	f.StringVar(&o.StateDir, "state-dir", "", "state directory of the cluster it starts (default: a temporary directory); with --kubeconfig, the cluster's, to find its logs")
	f.IntVar(&o.Port, "port", o.Port, "apiserver port of the cluster it starts")
	f.StringVarP(&o.Namespace, "namespace", "n", o.Namespace, "namespace of the benchmark VM")
	f.StringVar(&o.VMName, "vm-name", o.VMName, "name of the benchmark VM (its disk is NAME-root)")
	f.StringVar(&o.Memory, "memory", o.Memory, "guest memory")
	f.IntVar(&o.Runs, "runs", o.Runs, "migrations per scenario, for Ferry and for raw QEMU each")
	f.IntVar(&o.DirtyMiB, "dirty-mib", o.DirtyMiB, "MiB the busy guest rewrites in a loop")
	f.DurationVar(&o.DirtyWarmup, "dirty-warmup", o.DirtyWarmup, "how long the guest dirties before a scenario's first migration")
	f.StringSliceVar(&o.Scenarios, "scenarios", o.Scenarios, "scenarios to run: idle, dirty")
	f.BoolVar(&o.SkipRaw, "skip-raw", false, "skip the bare-QEMU baseline")
	f.DurationVar(&o.MigrationTimeout, "migration-timeout", o.MigrationTimeout, "longest one migration may take before it counts as failed")
	f.DurationVar(&o.WaitOther, "wait-other", 0, "wait this long for another `ferry up` on this machine to end")
	f.Int64Var(&o.Bandwidth, "raw-bandwidth", o.Bandwidth, "raw baseline bandwidth (bytes/s) when no Ferry migration reported the controller's")
	f.DurationVar(&o.DowntimeLimit, "raw-downtime-limit", o.DowntimeLimit, "raw baseline downtime limit when no Ferry migration reported the controller's")
	return cmd
}

func drainCommand() *cobra.Command {
	o := bench.DefaultDrainOptions()
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Time `kubectl drain` of a node running VMs against single live migrations",
		Long: `Measures how long ` + "`kubectl drain`" + ` takes to empty a node that runs N VMs, which
Ferry live-migrates instead of letting their launcher pods be evicted, against N single
live migrations.

Unless --kubeconfig points at a running cluster, starts its own
` + "`ferry up --nodes 3 --port 17443 --sample-vm=false`" + ` (--nodes; in --state-dir or a
temporary directory; only one ` + "`ferry up`" + ` can run on a machine, see --wait-other). The
cluster needs nodes node-1 and node-2. With --outbound K it sets migrationsPerNodeOutbound
to K in the ConfigMap ferry-system/ferry-config for the run (restored afterwards).

With every other node cordoned, it creates the VMs drain-bench-1 … drain-bench-N
(--vms, --memory, 1 core), each with its own VirtualDisk from the ClusterVirtualImage
ferry-guest (created from the locally built guest image when missing), waits until all
run on node-1 and their guests count ("CNT n" on the serial console), and uncordons the
other nodes.

Baseline: for each VM in turn, a Migrate operation to node-2
(spec.migrate.nodeSelector kubernetes.io/hostname) and one back to node-1, each timed
from creating the VirtualMachineOperation to seeing it Completed (±0.1 s); single is the
median of these 2N samples, checked like ` + "`ferry-bench migration`" + `'s.

Drain: runs ` + "`ferry k drain node-1 --ignore-daemonsets --delete-emptydir-data`" + ` and
times it until it exits 0 (the benchmark fails with its output when it exits otherwise
or runs past --drain-timeout). kubectl retries a refused eviction every 5 s, so the drain
ends up to 5 s after the last VM left. Then every VM must run on another node with the
same status.ipAddress, and its guest must count on from where the source stopped without
"FERRY-GUEST BOOTED" in its new serial log (within 3 minutes, and 10 s for the counter);
node-1 must be cordoned. A VM that does not is a post-drain failure. Then
` + "`ferry k uncordon node-1`" + `.

Without Ferry's eviction webhook (a ValidatingWebhookConfiguration named *ferry*),
kubectl drain deletes the launcher pods and the VMs restart elsewhere: every VM is then
a post-drain failure.

It prints (in ms) the drain time, the single migration median and maximum, N × the
median, the ratio drain / (N × single median) and the post-drain failures, one row per VM
(nodes, addresses, when it was first seen Running off node-1), and each failure's
details (VM status, operations, log lines naming its source pod). Ctrl-C stops the
benchmark, uncordons what it cordoned, deletes the VMs (unless --keep) and stops the
cluster it started; the temporary state directory is kept when something failed.

At most N+1 guests run at once (N + one migration target) unless --outbound, or the
cluster's own settings, let the drain migrate several VMs at a time.`,
		Example: `  ferry-bench drain --vms 2 --memory 128Mi
  ferry-bench drain --vms 4 --outbound 2
  ferry-bench drain --kubeconfig /var/lib/ferry/control-plane/admin.kubeconfig --vms 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			return bench.RunDrain(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.FerryBin, "ferry-bin", "", "ferry binary that runs the cluster, drain and uncordon (default: ferry next to ferry-bench, else bin/ferry)")
	f.StringVar(&o.FerryBin, "ferry", "", "same as --ferry-bin")
	_ = f.MarkHidden("ferry")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "benchmark the running cluster of this kubeconfig instead of starting one")
	f.StringVar(&o.StateDir, "state-dir", "", "state directory of the cluster it starts (default: a temporary directory); with --kubeconfig, the cluster's, to find its logs")
	f.IntVar(&o.Port, "port", o.Port, "apiserver port of the cluster it starts")
	f.IntVar(&o.Nodes, "nodes", o.Nodes, "nodes of the cluster it starts (at least 2)")
	f.StringVarP(&o.Namespace, "namespace", "n", o.Namespace, "namespace of the benchmark VMs")
	f.StringVar(&o.VMPrefix, "vm-prefix", o.VMPrefix, "the VMs are PREFIX-1 … PREFIX-N, their disks NAME-root")
	f.IntVar(&o.VMs, "vms", o.VMs, "VMs on the drained node")
	f.StringVar(&o.Memory, "memory", o.Memory, "memory of each guest")
	f.IntVar(&o.Outbound, "outbound", 0, "if above 0, migrationsPerNodeOutbound in ConfigMap ferry-system/ferry-config during the run")
	f.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "longest the drain may take before the benchmark fails")
	f.DurationVar(&o.MigrationTimeout, "migration-timeout", o.MigrationTimeout, "longest one single migration may take before it counts as failed")
	f.DurationVar(&o.WaitOther, "wait-other", 0, "wait this long for another ferry up on this machine to end")
	f.BoolVar(&o.Keep, "keep", false, "leave the VMs, their disks and the state directory (a cluster it started still stops; ferry up --state-dir DIR resumes it)")
	return cmd
}
