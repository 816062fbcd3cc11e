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
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// NewCommand returns `ferry v`.
func NewCommand(kubeconfig func() string) *cobra.Command {
	return newCommand(&Globals{Kubeconfig: kubeconfig, Out: os.Stdout})
}

func newCommand(g *Globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "v",
		Short: "Virtual machine verbs: start, stop, restart, evict, migrate, console, vnc, drain, ssh, scp, port-forward",
		Long: "Each of start, stop, restart, evict and migrate creates a VirtualMachineOperation, as `ferry k create` of one\n" +
			"would; --wait follows it. evict moves a running VM live to any other node that fits it; migrate does the same,\n" +
			"optionally to --target-node-name. console and vnc reach the VM's serial console and screen; ssh, scp and\n" +
			"port-forward its ports (the system OpenSSH client for ssh and scp).\n" +
			"A VM is named VM or VM.NAMESPACE; without a namespace, -n, else the kubeconfig context's namespace, applies.",
	}
	cmd.PersistentFlags().StringVarP(&g.Namespace, "namespace", "n", "", "namespace of the VM (default: the kubeconfig context's namespace, else default)")
	for _, t := range []v1alpha2.OperationType{v1alpha2.OpStart, v1alpha2.OpStop, v1alpha2.OpRestart, v1alpha2.OpEvict, v1alpha2.OpMigrate} {
		cmd.AddCommand(operationCommand(g, t))
	}
	cmd.AddCommand(consoleCommand(g), vncCommand(g), drainCommand(g), sshCommand(g), scpCommand(g), portForwardCommand(g), connectCommand())
	cmd.AddCommand(uploadCommand(g))
	return cmd
}

// opFlags are the flags of an operation verb, d8's.
type opFlags struct {
	wait    bool
	force   *bool // nil: the flag was not given (the VM's liveMigrationPolicy decides)
	timeout time.Duration
	// targetNode is migrate's --target-node-name.
	targetNode string
}

func operationCommand(g *Globals, t v1alpha2.OperationType) *cobra.Command {
	var f opFlags
	var force bool
	verb := strings.ToLower(string(t))
	example := fmt.Sprintf("  ferry v %[1]s linux-vm\n  ferry v %[1]s linux-vm.project-1 --wait\n  ferry v %[1]s -n project-1 linux-vm -w -t 2m", verb)
	if t == v1alpha2.OpMigrate {
		example += "\n  ferry v migrate -n project-1 linux-vm --target-node-name production-1\n  ferry v migrate linux-vm --force   # AutoConverge, as the liveMigrationPolicy allows"
	}
	cmd := &cobra.Command{
		Use:     verb + " VM",
		Short:   fmt.Sprintf("%s a VM (creates a VirtualMachineOperation of type %s)", t, t),
		Example: example,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := g.target(args[0])
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("force") {
				f.force = ptr.To(force)
			}
			if (cmd.Flags().Changed("target-node-name") || cmd.Flags().Changed("target-node")) && f.targetNode == "" {
				return errors.New("--target-node-name cannot be empty")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if f.targetNode != "" {
				if err := checkTargetNode(ctx, c, vm, f.targetNode); err != nil {
					return err
				}
			}
			op := newOperation(t, vm, f)
			if err := c.Create(ctx, op); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "virtualmachineoperation/%s created\n", op.Name)
			if !f.wait {
				return nil
			}
			return follow(ctx, c, g.Out, client.ObjectKeyFromObject(op), f.timeout)
		},
	}
	fs := cmd.Flags()
	fs.BoolVarP(&f.wait, "wait", "w", false, "wait until the operation ends, showing its progress")
	switch t {
	case v1alpha2.OpStart:
		// Deckhouse refuses a forced Start (the CRD's rule): no --force.
	case v1alpha2.OpEvict, v1alpha2.OpMigrate:
		fs.BoolVarP(&force, "force", "f", false, "AutoConverge: let the migration throttle the guest's CPU to converge (as the VM's liveMigrationPolicy allows; --force=false turns it off under PreferForced)")
	default:
		fs.BoolVarP(&force, "force", "f", false, "do not wait for the guest to shut down")
	}
	if t == v1alpha2.OpMigrate {
		fs.StringVar(&f.targetNode, "target-node-name", "", "node to migrate to (the operation's spec.migrate.nodeSelector kubernetes.io/hostname; default: any other node that fits)")
		fs.StringVar(&f.targetNode, "target-node", "", "the same as --target-node-name")
		_ = fs.MarkHidden("target-node")
	}
	fs.DurationVarP(&f.timeout, "timeout", "t", 10*time.Minute, "how long --wait waits")
	// d8 asks before it acts unless -y is given; ferry v never asks.
	fs.BoolP("yes", "y", false, "accepted for d8 compatibility: ferry v does not ask for confirmation")
	return cmd
}

// newOperation is the VirtualMachineOperation a verb creates: d8's, but named after the verb.
func newOperation(t v1alpha2.OperationType, vm vmRef, f opFlags) *v1alpha2.VirtualMachineOperation {
	op := &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{GenerateName: strings.ToLower(string(t)) + "-" + vm.Name + "-", Namespace: vm.Namespace},
		Spec:       v1alpha2.VirtualMachineOperationSpec{Type: t, VirtualMachineName: vm.Name, Force: f.force},
	}
	if t == v1alpha2.OpStart {
		op.Spec.Force = nil
	}
	if t == v1alpha2.OpMigrate && f.targetNode != "" {
		op.Spec.Migrate = &v1alpha2.MigrateSpec{NodeSelector: map[string]string{corev1.LabelHostname: f.targetNode}}
	}
	return op
}

// checkTargetNode refuses, as d8 does before it creates the operation, a target node that
// does not exist or already runs the VM. Whether the node fits the VM the controller
// decides (and says, in the operation's status). A user who may not read nodes (a tenant)
// leaves the check to the controller.
func checkTargetNode(ctx context.Context, c client.Client, vm vmRef, node string) error {
	var v v1alpha2.VirtualMachine
	if err := c.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: vm.Name}, &v); err != nil {
		return err
	}
	if v.Status.NodeName == node {
		return fmt.Errorf("VM %s already runs on node %s: name another node", vm, node)
	}
	err := c.Get(ctx, client.ObjectKey{Name: node}, &corev1.Node{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("there is no node %s in the cluster", node)
	case apierrors.IsForbidden(err):
		return nil
	}
	return err
}

// follow prints each change of an operation's phase, progress and condition until it
// ends.
func follow(ctx context.Context, c client.Client, out io.Writer, key client.ObjectKey, timeout time.Duration) error {
	var last string
	var op v1alpha2.VirtualMachineOperation
	start := time.Now()
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, key, &op); err != nil {
			return false, err
		}
		if line := statusLine(&op); line != last && op.Status.Phase != "" {
			fmt.Fprintf(out, "[%5.1fs] %s\n", time.Since(start).Seconds(), line)
			last = line
		}
		return op.Finished(), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", key.Name, err)
	}
	if op.Status.Phase != v1alpha2.OpCompleted {
		reason, msg := op.Outcome()
		return fmt.Errorf("%s %s: %s: %s", key.Name, op.Status.Phase, reason, msg)
	}
	return nil
}

// statusLine is an operation's status in a line: phase, progress (migrations), reason and
// message.
func statusLine(op *v1alpha2.VirtualMachineOperation) string {
	parts := []string{string(op.Status.Phase)}
	if op.Status.Progress != "" {
		parts = append(parts, op.Status.Progress)
	}
	reason, msg := op.Outcome()
	if reason != "" {
		parts = append(parts, reason+":", msg)
	}
	return strings.Join(parts, " ")
}
