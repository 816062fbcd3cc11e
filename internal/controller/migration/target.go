package migration

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/evacuation"
)

// refuseTarget says why no node that the operation's spec.migrate.nodeSelector picks can
// take the VM ("" when one can, or when the operation names no nodes): none has those
// labels, the VM already runs on the only one, or each is cordoned, not Ready, outside the
// VM's own placement (nodeSelector, affinity, tolerations) or too small. Refused at once, the
// operation fails with the reason instead of waiting out the scheduling timeout for a
// target pod no scheduler would place; the VM keeps running where it is.
func (r *Reconciler) refuseTarget(ctx context.Context, op *v1alpha2.VirtualMachineOperation, vm *v1alpha2.VirtualMachine, source *corev1.Pod) (string, error) {
	if op.Spec.Migrate == nil || len(op.Spec.Migrate.NodeSelector) == 0 {
		return "", nil
	}
	sel := op.Spec.Migrate.NodeSelector
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes, client.MatchingLabels(sel)); err != nil {
		return "", err
	}
	what := "spec.migrate.nodeSelector " + selectorText(sel)
	if len(nodes.Items) == 0 {
		return fmt.Sprintf("%s: no node has these labels", what), nil
	}
	others := slices.DeleteFunc(nodes.Items, func(n corev1.Node) bool { return n.Name == source.Spec.NodeName })
	if len(others) == 0 {
		return fmt.Sprintf("%s: VM %s already runs on node %s, the only node it picks", what, vm.Name, source.Spec.NodeName), nil
	}
	// Memory is judged against each node's allocatable memory only (no pods are counted):
	// what other pods use, the scheduler weighs.
	a := evacuation.Assess(vm, source, others, nil)
	if !a.Migratable && a.Reason == evacuation.ReasonNoTargetNode {
		var why []string
		for _, n := range others {
			why = append(why, "node "+n.Name+" "+a.Unfit[n.Name])
		}
		slices.Sort(why)
		return fmt.Sprintf("%s: no node it picks can take VM %s: %s", what, vm.Name, strings.Join(why, "; ")), nil
	}
	return "", nil
}

func selectorText(sel map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		parts = append(parts, k+"="+sel[k])
	}
	return strings.Join(parts, ",")
}
