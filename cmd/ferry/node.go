package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/internal/up"
)

// nodeCommand injects faults into the nodes of a running `ferry up`.
func nodeCommand(stateDir *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Fail and restore the nodes of a ferry up cluster (power, network, agent), to watch Ferry recover",
		Long: `Fault injection on the nodes of a running ferry up (for demonstrations and tests):

  poweroff NODE     kill every process of the node at once, as a power loss; it stays down
  poweron NODE      let the node boot again: it rejoins the cluster
  disconnect NODE   cut the node's network (its VMs keep running, cut off)
  connect NODE      give it back
  freeze NODE       stop the node's agent (SIGSTOP): no Lease renewals, no watchdog feeds
  thaw NODE         let the agent go on (SIGCONT)

With fencing on (the NodeGroup worker), the node's watchdog kills its VMs when the agent
stops feeding it, and the cluster restarts them on other nodes once the node is fenced:
watch with  ferry k get vm -w  and  ferry k get events -w.`,
	}
	one := func(use, short string, run func(node string) (string, error)) *cobra.Command {
		return &cobra.Command{
			Use: use + " NODE", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				msg, err := run(args[0])
				if err != nil {
					return err
				}
				fmt.Fprintln(c.OutOrStdout(), msg)
				return nil
			},
		}
	}
	cmd.AddCommand(
		one("poweroff", "Power a node off: kill all its processes; it stays down until poweron", func(n string) (string, error) {
			killed, err := up.PowerOff(*stateDir, n)
			return fmt.Sprintf("node %s powered off (%d processes killed)", n, len(killed)), err
		}),
		one("poweron", "Power a node on: it boots and rejoins the cluster", func(n string) (string, error) {
			return fmt.Sprintf("node %s powered on", n), up.PowerOn(*stateDir, n)
		}),
		one("disconnect", "Cut a node off the network", func(n string) (string, error) {
			return fmt.Sprintf("node %s disconnected", n), up.Disconnect(*stateDir, n)
		}),
		one("connect", "Give a disconnected node its network back", func(n string) (string, error) {
			return fmt.Sprintf("node %s connected", n), up.Connect(*stateDir, n)
		}),
		one("freeze", "Stop a node's agent (SIGSTOP)", func(n string) (string, error) {
			pid, err := up.Freeze(*stateDir, n)
			return fmt.Sprintf("agent of node %s frozen (pid %d)", n, pid), err
		}),
		one("thaw", "Let a frozen agent go on (SIGCONT)", func(n string) (string, error) {
			pid, err := up.Thaw(*stateDir, n)
			return fmt.Sprintf("agent of node %s thawed (pid %d)", n, pid), err
		}),
	)
	return cmd
}
