package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/internal/bench/chaos"
)

func chaosCommand() *cobra.Command {
	o := chaos.DefaultChaosOptions()
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Inject random faults during migrations, drains and failovers, and check the invariants",
		Long: `Runs --trials chaos trials on one cluster and checks, after each, that nothing was lost.

The cluster is ` + "`ferry up --fencing-profile Fast`" + ` with --nodes simulated nodes
(` + "`ferry sim-nodes`" + `: real agents, controllers and control plane; guests in memory),
or with --real, --nodes real nodes running QEMU guests. It creates --vms VMs, each with a
VirtualDisk of its own (half AlwaysOn, half AlwaysOnUnlessStoppedManually).

Each trial draws, from --seed and its number, an operation on a running VM:
  migrate    an Evict VirtualMachineOperation
  drain      kubectl drain of the VM's node (uncordoned afterwards)
  failover   the VM's node powered off (powered on once its VMs run elsewhere)
and a fault injected 0–4 s (simulated) or 0–8 s (real) after it starts:
  none, kill-source-launcher, kill-target-launcher (SIGKILL, with the guest),
  kill-agent (SIGKILL; ferry up restarts it; simulated nodes: its launchers die with it;
    real nodes: they run on under the node's stand-in kubelet, as beside a real kubelet),
  freeze-agent and cut-network (1–12 s: beyond the 5 s watchdog the node resets),
  restart-controller (SIGKILL; ferry up restarts it),
  restart-apiserver (apiserver and etcd stopped and started again).
Agent and network faults hit the source node or the migration target's node.

Then it waits (up to --settle) for the cluster to settle and checks:
  - every VM is Running on a Ready node and exactly one guest of it runs
    (simulated: guests running in sim-nodes; real: QEMU processes of the VM);
  - no VM ran in two places at once during the trial (simulated: any two guests
    running at the same instant; real: two instances printing new heartbeat lines on
    their serial consoles for 1.5 s or more at once, polled every 200 ms);
  - every VirtualMachineOperation created during the trial is Completed or Failed;
  - every VM kept its IP address and its VirtualDisk (same UID).
A trial that does not settle in time counts as a violation. For each violation it prints
the trial's seed and number (to replay it alone) and its event log: what the trial did
and every change of the VMs, pods, operations and nodes it saw (polled every 250 ms).`,
		Example: `  ferry-bench chaos --trials 200 --nodes 5 --vms 10 --seed 1
  ferry-bench chaos --real --trials 20 --nodes 3 --vms 2 --seed 7
  ferry-bench chaos --seed 1 --first-trial 42 --trials 1     # replay trial 42`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Trials < 1 || o.Nodes < 2 || o.VMs < 1 {
				return fmt.Errorf("need --trials ≥ 1, --nodes ≥ 2 and --vms ≥ 1")
			}
			res, err := chaos.RunChaos(cmd.Context(), o)
			if err != nil {
				return err
			}
			if res.Violations > 0 {
				return fmt.Errorf("%d of %d trials violated an invariant", res.Violations, res.Trials)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Ferry, "ferry", o.Ferry, "ferry binary that runs the cluster")
	f.StringVar(&o.StateDir, "state-dir", "", "state directory of the cluster (default: a temporary one, kept on a violation)")
	f.IntVar(&o.Port, "port", o.Port, "apiserver port of the cluster")
	f.BoolVar(&o.Real, "real", false, "real nodes and QEMU guests instead of simulated nodes")
	f.IntVar(&o.Nodes, "nodes", o.Nodes, "nodes")
	f.IntVar(&o.VMs, "vms", o.VMs, "VMs")
	f.IntVar(&o.Trials, "trials", o.Trials, "trials")
	f.Uint64Var(&o.Seed, "seed", o.Seed, "seed of the trials' random choices")
	f.IntVar(&o.FirstTrial, "first-trial", 0, "number of the first trial (to replay one)")
	f.StringSliceVar(&o.Plan, "plan", nil, "fixed OPERATION+FAULT of the trials, in turn (e.g. drain+kill-agent,failover+none); default: drawn from the seed")
	f.DurationVar(&o.Settle, "settle", o.Settle, "how long a trial may take to settle")
	f.DurationVar(&o.WaitOther, "wait-other", 10*time.Minute, "how long to wait for another ferry up on this machine to end")
	return cmd
}
