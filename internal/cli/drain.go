package cli

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/evacuation"
)

func drainCommand(g *Globals) *cobra.Command {
	var dryRun bool
	var timeout string
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Move every VM off a node live and cordon it (kubectl drain of its VM pods); --dry-run tells where each VM would go",
		Long: "drain cordons NODE and evicts its VM launcher pods with kubectl drain; Ferry refuses each eviction until\n" +
			"the VM runs on another node (moved live), so drain ends when the node runs no VM. `ferry k uncordon NODE`\n" +
			"returns the node. With --dry-run nothing changes: it lists the VMs on NODE, the nodes each could move\n" +
			"to, and the VMs that would block the drain, with the reason.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := args[0]
			if dryRun {
				return drainPlan(cmd, g, node)
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			k := exec.CommandContext(cmd.Context(), self, "k", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
				"--pod-selector", v1alpha2.LabelVMName, "--timeout", timeout)
			k.Env = append(os.Environ(), "KUBECONFIG="+g.Kubeconfig())
			k.Stdout, k.Stderr = g.Out, os.Stderr
			return k.Run()
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "change nothing: list where each VM would go and which would block")
	cmd.Flags().StringVar(&timeout, "timeout", "0s", "give up after this long (kubectl drain --timeout; 0s: never)")
	return cmd
}

// drainPlan prints, for each VM on node, where it could go or why it would block a drain.
func drainPlan(cmd *cobra.Command, g *Globals, node string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	n := &corev1.Node{}
	if err := c.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
		return err
	}
	var vms v1alpha2.VirtualMachineList
	if err := c.List(ctx, &vms); err != nil {
		return err
	}
	sort.Slice(vms.Items, func(i, j int) bool {
		return vms.Items[i].Namespace+"/"+vms.Items[i].Name < vms.Items[j].Namespace+"/"+vms.Items[j].Name
	})
	w := tabwriter.NewWriter(g.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VM\tPHASE\tWOULD MOVE TO\tBLOCKS THE DRAIN")
	moves, blocks := 0, 0
	for i := range vms.Items {
		vm := &vms.Items[i]
		if vm.Status.NodeName != node {
			continue
		}
		s, err := evacuation.Observe(ctx, c, vm, evacuation.DefaultBackoff)
		if err != nil {
			return err
		}
		to, why := "-", "no"
		switch {
		case s.Migratable:
			to = s.Targets[0]
			if len(s.Targets) > 1 {
				to += " (or " + strings.Join(s.Targets[1:], ", ") + ")"
			}
			moves++
		default:
			why = "yes: " + s.Reason + ": " + s.Message
			blocks++
		}
		fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\n", vm.Namespace, vm.Name, vm.Status.Phase, to, why)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	state := ""
	if n.Spec.Unschedulable {
		state = " (already cordoned)"
	}
	fmt.Fprintf(g.Out, "\nNode %s%s: %d VM(s) would move live, %d would block the drain. Nothing was changed.\n", node, state, moves, blocks)
	return nil
}
