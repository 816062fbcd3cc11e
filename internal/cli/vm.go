package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
)

// Globals are the flags every verb shares.
type Globals struct {
	Kubeconfig func() string
	Namespace  string
	Out        io.Writer
	// resolver, when set, finds VMs instead of the cluster (tests of port-forward and ssh).
	resolver Resolver
}

func (g *Globals) client() (client.Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", g.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig %s: %w (is `ferry up` running?)", g.Kubeconfig(), err)
	}
	return client.New(cfg, client.Options{Scheme: controller.NewScheme()})
}

// NewCommand returns `ferry v`.
func NewCommand(kubeconfig func() string) *cobra.Command {
	return newCommand(&Globals{Kubeconfig: kubeconfig, Out: os.Stdout})
}

func newCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "v",
		Short: "Virtual machine verbs: start, stop, restart, evict, migrate, console, drain, ssh, scp, port-forward",
		Long: "Each verb creates a VirtualMachineOperation, as `ferry k apply` of one would; --wait follows it.\n" +
			"evict moves a running VM live to any other node that fits it; migrate does the same, optionally to --target-node.\n" +
			"ssh, scp and port-forward reach a running VM's ports (the system OpenSSH client for ssh and scp).",
	}
	cmd.PersistentFlags().StringVarP(&g.Namespace, "namespace", "n", "default", "namespace of the VM")
	for _, t := range []v1alpha2.OperationType{v1alpha2.OpStart, v1alpha2.OpStop, v1alpha2.OpRestart, v1alpha2.OpEvict, v1alpha2.OpMigrate} {
		cmd.AddCommand(operationCommand(g, t))
	}
	cmd.AddCommand(consoleCommand(g), drainCommand(g), sshCommand(g), scpCommand(g), portForwardCommand(g), connectCommand())
	return cmd
}

func operationCommand(g *Globals, t v1alpha2.OperationType) *cobra.Command {
	var waitFor bool
	var force bool
	var targetNode string
	var timeout time.Duration
	verb := strings.ToLower(string(t))
	cmd := &cobra.Command{
		Use:   verb + " VM",
		Short: fmt.Sprintf("%s a VM (creates a VirtualMachineOperation of type %s)", t, t),
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			op := &v1alpha2.VirtualMachineOperation{
				ObjectMeta: metav1.ObjectMeta{GenerateName: verb + "-" + args[0] + "-", Namespace: g.Namespace},
				Spec:       v1alpha2.VirtualMachineOperationSpec{Type: t, VirtualMachineName: args[0]},
			}
			if force {
				op.Spec.Force = ptr.To(true)
			}
			if targetNode != "" {
				op.Spec.Migrate = &v1alpha2.MigrateSpec{NodeSelector: map[string]string{"kubernetes.io/hostname": targetNode}}
			}
			ctx := cmd.Context()
			if err := c.Create(ctx, op); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "virtualmachineoperation/%s created\n", op.Name)
			if !waitFor {
				return nil
			}
			return follow(ctx, c, g.Out, client.ObjectKeyFromObject(op), timeout)
		},
	}
	cmd.Flags().BoolVar(&waitFor, "wait", false, "wait until the operation ends, showing its progress")
	switch t {
	case v1alpha2.OpEvict, v1alpha2.OpMigrate:
		cmd.Flags().BoolVar(&force, "force", false, "let the migration throttle the guest's CPU to converge (as the VM's liveMigrationPolicy allows)")
	default:
		cmd.Flags().BoolVar(&force, "force", false, "do not wait for the guest to shut down")
	}
	if t == v1alpha2.OpMigrate {
		cmd.Flags().StringVar(&targetNode, "target-node", "", "node to migrate to (default: any that fits)")
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "how long --wait waits")
	return cmd
}

// follow prints each change of an operation's phase and progress until it ends.
func follow(ctx context.Context, c client.Client, out io.Writer, key client.ObjectKey, timeout time.Duration) error {
	var last string
	var op v1alpha2.VirtualMachineOperation
	start := time.Now()
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, key, &op); err != nil {
			return false, err
		}
		line := fmt.Sprintf("%s %s", op.Status.Phase, op.Status.Progress)
		if line != last && op.Status.Phase != "" {
			fmt.Fprintf(out, "[%5.1fs] %s\n", time.Since(start).Seconds(), line)
			last = line
		}
		return op.Status.Phase == v1alpha2.OpCompleted || op.Status.Phase == v1alpha2.OpFailed, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", key.Name, err)
	}
	if op.Status.Phase == v1alpha2.OpFailed {
		msg := op.Status.Progress
		if c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil {
			msg = c.Reason + ": " + c.Message
		}
		return errors.New(msg)
	}
	return nil
}
