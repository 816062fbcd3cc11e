package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

func consoleCommand(g *Globals) *cobra.Command {
	var logOnly bool
	cmd := &cobra.Command{
		Use:   "console VM",
		Short: "Attach to a VM's serial console (under ferry up); --log prints what the guest wrote",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var vm v1alpha2.VirtualMachine
			if err := c.Get(ctx, client.ObjectKey{Namespace: g.Namespace, Name: args[0]}, &vm); err != nil {
				return err
			}
			var podName string
			for _, p := range vm.Status.VirtualMachinePods {
				if p.Active {
					podName = p.Name
				}
			}
			if podName == "" {
				return fmt.Errorf("VM %s is %s: it has no running launcher pod", vm.Name, vm.Status.Phase)
			}
			var pod corev1.Pod
			if err := c.Get(ctx, client.ObjectKey{Namespace: g.Namespace, Name: podName}, &pod); err != nil {
				return err
			}
			runDir := pod.Annotations[kubelet.AnnotationRunDir]
			if runDir == "" {
				return fmt.Errorf("pod %s does not say where its console is (not run by a Ferry agent on this machine)", podName)
			}
			if logOnly {
				b, err := os.ReadFile(filepath.Join(runDir, hypervisor.SerialLogName))
				if err != nil {
					return err
				}
				_, err = g.Out.Write(b)
				return err
			}
			fmt.Fprintf(os.Stderr, "Connected to %s on node %s (Ctrl-C to leave)\n", vm.Name, pod.Spec.NodeName)
			return hypervisor.Console(ctx, runDir, os.Stdin, g.Out)
		},
	}
	cmd.Flags().BoolVar(&logOnly, "log", false, "print the guest's serial output so far and exit")
	return cmd
}
