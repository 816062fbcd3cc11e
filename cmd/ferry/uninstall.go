package main

import (
	"context"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
)

// uninstallCommand is the step before `kubectl delete -k deploy/base`: Ferry's objects go
// while the controller still runs to finalize them.
func uninstallCommand(kubeconfig func() string) *cobra.Command {
	o := uninstall.Options{ControllerNamespace: "ferry-system"}
	var kc string
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove Ferry's VMs, objects and CRDs from a cluster, before kubectl delete -k deploy/base",
		Long: `Removes, as the cluster's admin, what kubectl delete -k deploy/base cannot: Ferry's objects.
Deleting Ferry's CRDs with the controller at the same time would leave every VM, disk and
image waiting for finalizers no one removes, and the CRDs Terminating for ever.

With the controller running: deletes every VirtualMachine (the controller stops its launcher
pods and releases its address and disks) and VirtualMachineOperation, and waits for them;
then deletes Ferry's CRDs, and the controller releases the disks, images and disk snapshots
left, keeping their files in the shared storage (--delete-data deletes them first, and so
their files). Then run: kubectl delete -k deploy/base --ignore-not-found

--force goes on without a running controller, or after kubectl delete -k came first and the
CRDs hang in Terminating: it removes Ferry's finalizers itself (VMs then stop as their launcher
pods are garbage-collected; no file is removed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kc == "" {
				kc = kubeconfig()
			}
			cfg, err := clientcmd.BuildConfigFromFlags("", kc)
			if err != nil {
				return err
			}
			c, err := client.New(cfg, client.Options{Scheme: controller.NewScheme()})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			o.Out = cmd.OutOrStdout()
			return uninstall.Clean(ctx, c, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kc, "kubeconfig", "", "kubeconfig of the cluster's admin (default: $KUBECONFIG, or ferry up's)")
	f.BoolVar(&o.Force, "force", false, "remove Ferry's finalizers here when the controller does not run or does not finish in time")
	f.BoolVar(&o.DeleteData, "delete-data", false, "delete the disks, images and disk snapshots first, with their files in the shared storage (the controller must run)")
	f.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "how long to wait for the controller at each step")
	f.StringVar(&o.ControllerNamespace, "controller-namespace", o.ControllerNamespace, "namespace of the controller's leader Lease (ferry-controller)")
	return cmd
}
