// Command ferry-bench measures Ferry. `ferry-bench migration` compares Ferry's live
// migration (Evict operations on a `ferry up` cluster) with bare QEMU migrations of the
// same guest; `ferry-bench drain` times `kubectl drain` of a node running VMs against
// single live migrations; `ferry-bench failover` times how a VM comes back after its node
// fails, and `ferry-bench false-fencing` counts nodes fenced without a fault under load;
// see package internal/bench and the package of each benchmark below it.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ferryvm/ferry/internal/bench/drain"
	"github.com/ferryvm/ferry/internal/bench/failover"
	"github.com/ferryvm/ferry/internal/bench/migration"
	"github.com/ferryvm/ferry/internal/bench/scale"
)

func main() {
	ctrllog.SetLogger(logr.Discard()) // the client's own logging is noise here
	klog.SetOutput(io.Discard)        // e.g. watches cut short when a benchmark moves on
	klog.LogToStderr(false)
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
	root.AddCommand(migrationCommand(), drainCommand(), failoverCommand(), falseFencingCommand(), scaleCommand(), reportCommand(), chaosCommand())
	if err := root.ExecuteContext(ctx); err != nil {
		os.Exit(1)
	}
}

func migrationCommand() *cobra.Command {
	o := migration.DefaultOptions()
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

After each Ferry migration it migrates, with the same memory size, dirtying and migration
parameters (those Ferry's controller sent to the source node: 1 GiB/s, 300 ms and no
auto-converge by default), a guest between two bare QEMU processes on loopback (raw e2e:
migrate command until the destination runs): the runs interleave, Ferry, raw, Ferry, raw
…, so load falls on both alike. Each stage of a Ferry migration (target pod created,
scheduled, launcher started, QEMU listening, transfer start, switchover, guest on the
target, source gone, status written) is timed from the operation's creation through
watches, and printed per run and as medians.

It prints a table of medians and maxima (ms), Ferry's e2e over the raw transfer time,
their difference, and failure counts, followed by each failure's details (operation
status and the lines of STATE/logs naming it). Ctrl-C stops the benchmark, deletes the
VM and stops the cluster it started; the temporary state directory is kept when
something failed.

Two guests live at once, the VM and the raw one (both idle, or both dirtying), and each
migration starts a target beside them.`,
		Example: `  ferry-bench migration --runs 2 --memory 256Mi
  ferry-bench migration --runs 50 --memory 128Mi --skip-raw     # failure-rate study
  ferry-bench migration --kubeconfig /var/lib/ferry/control-plane/admin.kubeconfig`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			_, err := migration.RunMigration(cmd.Context(), o)
			return err
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
	f.BoolVar(&o.NoPing, "no-ping", false, "do not ping the VM during Ferry's migrations (no network downtime figures)")
	f.BoolVar(&o.RawTLS, "raw-tls", false, "migrate the bare-QEMU baseline over TLS with mutual certificate checks, as Ferry's launchers do by default (FERRY_MIGRATION_TLS=false in the environment starts the cluster without)")
	f.DurationVar(&o.MigrationTimeout, "migration-timeout", o.MigrationTimeout, "longest one migration may take before it counts as failed")
	f.DurationVar(&o.WaitOther, "wait-other", 0, "wait this long for another `ferry up` on this machine to end")
	f.Int64Var(&o.Bandwidth, "raw-bandwidth", o.Bandwidth, "raw baseline bandwidth (bytes/s) when no Ferry migration reported the controller's")
	f.DurationVar(&o.DowntimeLimit, "raw-downtime-limit", o.DowntimeLimit, "raw baseline downtime limit when no Ferry migration reported the controller's")
	return cmd
}

func drainCommand() *cobra.Command {
	o := drain.DefaultDrainOptions()
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
			_, err := drain.RunDrain(cmd.Context(), o)
			return err
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

func failoverCommand() *cobra.Command {
	o := failover.DefaultFailoverOptions()
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Time how a VM comes back on another node after its node fails (power, network, agent)",
		Long: `Measures failover: how long a VM whose node fails takes to run again on another
node, step by step, and whether two instances of it ever ran at once.

Unless --kubeconfig points at a running cluster, starts its own
` + "`ferry up --nodes 3 --port 17443 --sample-vm=false --fencing-profile PROFILE`" + ` (in
--state-dir or a temporary directory; only one ` + "`ferry up`" + ` can run on a machine, see
--wait-other). A running cluster keeps its own profile; it needs at least 3 nodes (one
failed node of three stays under the storm guard, which stops fencing when more than 49%
are unreachable) and its state directory (the faults act on it). It waits until the nodes are
Ready with armed watchdogs and creates the VM failover-bench (--vm-name; --memory, 1
core, runPolicy AlwaysOn) with its own VirtualDisk from the ClusterVirtualImage
ferry-guest (created from the locally built guest image when missing), and waits until
its guest counts ("CNT n" on the serial console).

For each fault (--faults) and run (--runs), it injects the fault into the VM's node with
` + "`ferry --state-dir STATE node FAULT NODE`" + `:
  poweroff    every process of the node killed, down until poweron
  disconnect  the node's host link down (its VMs keep running, cut off)
  freeze      the node's agent stopped (SIGSTOP): no Lease renewals, no watchdog feeds
T0 is when that command returned. Then it polls (every 100 ms) and records:
  detection     T0 → the VM's condition NodeReachable=False, reason FencingPending
  fencing wait  → the node's Node object gone (the fencing controller deleted it)
  new pod       → a new launcher pod of the VM seen (not the failed one)
  scheduled     → that pod seen with a node (spec.nodeName)
  pod running   → that pod Running
  boot          → the first CNT line in the new instance's serial log
  total         T0 → that first CNT
  VM running    T0 → the VM's status.phase Running on the new pod's node (before or
                after the first CNT; polled up to 10 s past it, - when not seen)
Each phase runs from the previous mark seen. Meanwhile it counts, every 100 ms, the QEMU
processes whose command line has -name guest=NAMESPACE/VM (a sample with more than one
is a double run), and follows the serial log of every instance of the VM
(STATE/nodes/NODE/pods/POD-UID/, whose launcher.log names the VM): the failed
instance's last CNT must come before the new instance's first, or the run is a double
run too. Then it undoes the fault (poweron, connect, thaw), waits until the node is back
(registered again as a new Node, Ready, its watchdog armed) and the VM runs, and goes on.

It prints one row per run (ms), the medians per fault, the fencing timing in force,
other platforms' figures as anchors, and the target: with Fast, the VM restarted
elsewhere (T0 → new launcher pod Running) under 15 s plus guest boot; with Critical,
under 5 s plus boot; never a double run. Ctrl-C restores the failed node, deletes the VM
(unless --keep) and stops the cluster it started; the temporary state directory is kept
when something failed.`,
		Example: `  ferry-bench failover
  ferry-bench failover --profile Critical --faults poweroff --runs 3
  ferry-bench failover --kubeconfig /var/lib/ferry/control-plane/admin.kubeconfig --runs 2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			_, err := failover.RunFailover(cmd.Context(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.FerryBin, "ferry-bin", "", "ferry binary that runs the cluster and injects the faults (default: ferry next to ferry-bench, else bin/ferry)")
	f.StringVar(&o.FerryBin, "ferry", "", "same as --ferry-bin")
	_ = f.MarkHidden("ferry")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "benchmark the running ferry up of this kubeconfig instead of starting one")
	f.StringVar(&o.StateDir, "state-dir", "", "state directory of the cluster it starts (default: a temporary directory); with --kubeconfig, the cluster's (default: two levels above the kubeconfig)")
	f.IntVar(&o.Port, "port", o.Port, "apiserver port of the cluster it starts")
	f.StringVar(&o.Profile, "profile", o.Profile, "fencing profile of the cluster it starts: Critical, Fast, Balanced, Tolerant")
	f.StringSliceVar(&o.Faults, "faults", o.Faults, "faults to inject: poweroff, disconnect, freeze")
	f.IntVar(&o.Runs, "runs", o.Runs, "failovers per fault")
	f.StringVarP(&o.Namespace, "namespace", "n", o.Namespace, "namespace of the benchmark VM")
	f.StringVar(&o.VMName, "vm-name", o.VMName, "name of the benchmark VM (its disk is NAME-root)")
	f.StringVar(&o.Memory, "memory", o.Memory, "guest memory")
	f.DurationVar(&o.RunTimeout, "run-timeout", o.RunTimeout, "longest one failover may take (fault to the new instance's first heartbeat) before it counts as failed")
	f.DurationVar(&o.WaitOther, "wait-other", 0, "wait this long for another ferry up on this machine to end")
	f.BoolVar(&o.Keep, "keep", false, "leave the VM, its disk and the state directory (a cluster it started still stops; ferry up --state-dir DIR resumes it)")
	return cmd
}

func falseFencingCommand() *cobra.Command {
	o := failover.DefaultFalseFencingOptions()
	cmd := &cobra.Command{
		Use:   "false-fencing",
		Short: "Count healthy nodes fenced under load (busy CPUs, slow network, frozen control plane), per fencing profile",
		Long: `Measures false fencing: how often a node that did not fail is fenced (or reset by its
watchdog) when the machine is loaded and the control plane stalls, for each fencing
profile.

For each profile (--profiles, one after another) it starts
` + "`ferry up --nodes 3 --port 17443 --sample-vm=false --fencing-profile PROFILE`" + ` in a
temporary directory (only one ` + "`ferry up`" + ` can run on a machine, see --wait-other), waits
until the nodes are Ready with armed watchdogs, and then, for --duration, with no fault:
  - keeps every CPU busy: --busy processes (default 2 × the CPUs) running
    sh -c 'while :; do :; done';
  - slows the nodes' network: tc qdisc add dev fvN root netem delay --delay --jitter on
    each node's host link (when netem is missing, it says so and goes on without);
  - freezes the control plane: SIGSTOP of the ` + "`ferry up`" + ` process, which runs etcd and the
    apiserver, for --pause every --pause-every, then SIGCONT.
The load ends after --duration; it watches on for the profile's fence-after plus 2 s, so
that a fencing the last pause set off is counted.

All along it polls (every 100 ms) the agents' Leases in ferry-node-lease (kube-node-lease when
the nodes have none; the oldest one seen, now
minus renewTime) and the Nodes (a Node deleted or recreated counts as removed); at the
end it counts the Fenced events on Nodes, the storm guard's FencingPaused events, the
watchdog resets in STATE/logs/node-N-watchdog.log and the Lease renewals too slow to feed
the watchdog in STATE/logs/node-N.log.

It prints one row per profile with its watchdog timeout, lease interval and fence-after
(ms) and the counts; the target is none fenced or reset with the default profile (Fast,
what ` + "`ferry up`" + ` uses). The busy loops, qdiscs and frozen control plane are undone on
error and on Ctrl-C too; each cluster stops after its profile (its state directory is kept
when a node was fenced or reset, or something failed, or with --keep).`,
		Example: `  ferry-bench false-fencing --duration 90s
  ferry-bench false-fencing --profiles Fast --duration 10m --pause 3s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			_, err := failover.RunFalseFencing(cmd.Context(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.FerryBin, "ferry-bin", "", "ferry binary that runs the clusters (default: ferry next to ferry-bench, else bin/ferry)")
	f.StringVar(&o.FerryBin, "ferry", "", "same as --ferry-bin")
	_ = f.MarkHidden("ferry")
	f.StringSliceVar(&o.Profiles, "profiles", o.Profiles, "fencing profiles to run, one cluster each")
	f.DurationVar(&o.Duration, "duration", o.Duration, "how long each cluster runs under load")
	f.DurationVar(&o.Pause, "pause", o.Pause, "how long the control plane is frozen each time (0: never)")
	f.DurationVar(&o.PauseEvery, "pause-every", o.PauseEvery, "how often the control plane is frozen")
	f.DurationVar(&o.Delay, "delay", o.Delay, "netem delay on each node's host link")
	f.DurationVar(&o.Jitter, "jitter", o.Jitter, "netem jitter on each node's host link")
	f.IntVar(&o.Busy, "busy", 0, "busy-loop processes (default 2 × the CPUs)")
	f.IntVar(&o.Port, "port", o.Port, "apiserver port of the clusters")
	f.DurationVar(&o.WaitOther, "wait-other", 0, "wait this long for another ferry up on this machine to end")
	f.BoolVar(&o.Keep, "keep", false, "keep each cluster's state directory")
	return cmd
}

func scaleCommand() *cobra.Command {
	o := scale.DefaultScaleOptions()
	cmd := &cobra.Command{
		Use:   "scale",
		Short: "Measure the control plane with simulated nodes: start, drain, evacuate, fail",
		Long: `Measures Ferry's control plane at a size no machine runs real guests at.

Starts ` + "`ferry up --nodes 0 --netns=false --sample-vm=false --fencing-profile Fast --ip-range 10.80.0.0/16`" + ` (port
--port, in --state-dir or a temporary directory) and ` + "`ferry sim-nodes --count N`" + `: N real
node agents in one process (Node, Lease renewals, pod handling, a fencing watchdog that is
armed and fed but never resets) whose launcher pods run in memory (launcher.RunSimulated:
no QEMU; a migration takes 200 ms). Then, against the real controllers:
  start     creates N × --vms-per-node AlwaysOn VMs (1 core at 10%, 128Mi, booting the shared
            image read-only) and times until all are Running;
  drain     ` + "`ferry k drain`" + ` of one node; time, and per evacuation operation the time
            from its creation to Completed (to the second, from its conditions);
  evacuate  drains --evacuate of the nodes at once (one kubectl drain each);
  fail      --fail nodes fail at once (their agents stop, their VMs die): per VM, the time
            until it runs on another node (fencing waits the Fast profile's 7 s first).
For each phase it prints the controller's CPU (share of a core) and RSS, the apiserver's
request rate (apiserver_request_total), and the VM controller's reconcile time p50/p99
(upper bounds of controller_runtime_reconcile_time_seconds buckets).`,
		Example: `  ferry-bench scale --nodes 10 --vms-per-node 10
  ferry-bench scale --nodes 100 --vms-per-node 30 --fail 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := scale.RunScale(cmd.Context(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Ferry, "ferry", o.Ferry, "ferry binary that runs the cluster")
	f.StringVar(&o.StateDir, "state-dir", "", "state directory of the cluster (default: a temporary one)")
	f.IntVar(&o.Port, "port", o.Port, "apiserver port of the cluster")
	f.IntVar(&o.Nodes, "nodes", o.Nodes, "simulated nodes")
	f.IntVar(&o.VMsPerNode, "vms-per-node", o.VMsPerNode, "VMs per node")
	f.Float64Var(&o.Evacuate, "evacuate", o.Evacuate, "share of the nodes drained at once")
	f.IntVar(&o.Fail, "fail", o.Fail, "nodes that fail at once")
	f.DurationVar(&o.WaitOther, "wait-other", o.WaitOther, "how long to wait for another ferry up on this machine to end")
	return cmd
}
