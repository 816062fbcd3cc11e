package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// NodePlacementOpPrefix starts the names of the operations Ferry creates to move a VM whose
// node no longer fits its placement, as Deckhouse names them.
const NodePlacementOpPrefix = "nodeplacement-update-"

// placementRetry is how long after a failed placement migration the next one starts.
const placementRetry = time.Minute

// running is what reconcileRunning observed of a VM that has a pod.
type running struct {
	// known: the active pod records the spec it was built from.
	known bool
	// pending are the changes of the spec the VM takes only at its next restart.
	pending []fieldChange
	// placementReason and placementMessage say why the VM's node no longer fits its
	// placement ("" when it fits or the VM does not run).
	placementReason, placementMessage string
	// migration is the VM's unfinished Evict or Migrate operation.
	migration *v1alpha2.VirtualMachineOperation
	// placementEdited: the VM's placement is not the one its pod was built with.
	placementEdited bool
}

// reconcileRunning applies to a VM that has a pod what changes of its spec can reach it
// while it runs: its labels go to its pods; changes that need a restart are listed and,
// with restartApprovalMode Automatic, restart it; a placement its node no longer fits
// moves it by live migration.
func (r *Reconciler) reconcileRunning(ctx context.Context, s *scope) error {
	p := s.active
	if p == nil || !s.wantRun {
		return nil
	}
	if err := r.syncLabels(ctx, s); err != nil {
		return err
	}
	if err := r.observeMigration(ctx, s); err != nil {
		return err
	}
	if applied, ok := podAppliedSpec(p); ok {
		s.run.known = true
		s.run.pending = append(restartChanges(applied, appliedSpecOf(s.vm)), addressChanges(s.vm)...)
		s.run.placementEdited = applied.Placement != placementDigest(s.vm)
	}
	guestRuns := launcherpod.GuestRunning(p) && p.Spec.NodeName != "" && p.DeletionTimestamp.IsZero()
	if !guestRuns {
		return nil
	}
	migrating := len(s.targets) > 0 || s.run.migration != nil || migrationOpen(s.vm)
	if len(s.run.pending) > 0 && s.vm.Spec.RestartApproval() == v1alpha2.RestartAutomatic && !migrating {
		return r.restartForChanges(ctx, s)
	}
	if !s.run.placementEdited {
		return nil
	}
	return r.keepPlacement(ctx, s, migrating)
}

// syncLabels gives the VM's live pods its labels (Deckhouse: labels apply at once).
func (r *Reconciler) syncLabels(ctx context.Context, s *scope) error {
	for _, p := range append([]*corev1.Pod{s.active}, s.targets...) {
		patch := labelPatch(s.vm, p)
		if patch == nil || !p.DeletionTimestamp.IsZero() {
			continue
		}
		body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": patch}})
		if err := r.Client.Patch(ctx, p.DeepCopy(), client.RawPatch(types.MergePatchType, body)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("copying the VM's labels to pod %s: %w", p.Name, err)
		}
	}
	return nil
}

// restartForChanges restarts a VM whose restartApprovalMode is Automatic: its pod goes (the
// guest is shut down as by a Restart operation) and the next one is built from the spec.
func (r *Reconciler) restartForChanges(ctx context.Context, s *scope) error {
	p := s.active
	if err := r.Client.Delete(ctx, p); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("restarting the VM to apply %s: %w", changePaths(s.run.pending), err)
	}
	r.Recorder.Eventf(s.vm, corev1.EventTypeNormal, "VMChangesApplied", "Restarting the VM to apply %s (restartApprovalMode Automatic): deleting launcher pod %s", changePaths(s.run.pending), p.Name)
	ctrl.LoggerFrom(ctx).Info("Restarted the VM to apply changes", "pod", p.Name, "changes", changePaths(s.run.pending))
	return nil
}

// migrationOpen tells whether the VM's status shows a migration that has not ended.
func migrationOpen(vm *v1alpha2.VirtualMachine) bool {
	ms := vm.Status.MigrationState
	return ms != nil && ms.StartTimestamp != nil && ms.EndTimestamp == nil
}

// observeMigration finds the VM's unfinished Evict or Migrate operation.
func (r *Reconciler) observeMigration(ctx context.Context, s *scope) error {
	ops, err := r.migrationOps(ctx, s.vm)
	if err != nil {
		return err
	}
	for i := range ops {
		if !ops[i].Finished() && ops[i].DeletionTimestamp.IsZero() {
			s.run.migration = &ops[i]
			return nil
		}
	}
	return nil
}

// migrationOps are the VM's Evict and Migrate operations, oldest first.
func (r *Reconciler) migrationOps(ctx context.Context, vm *v1alpha2.VirtualMachine) ([]v1alpha2.VirtualMachineOperation, error) {
	var list v1alpha2.VirtualMachineOperationList
	if err := r.Client.List(ctx, &list, client.InNamespace(vm.Namespace), client.MatchingFields{indexOpsByVM: vm.Name}); err != nil {
		return nil, fmt.Errorf("listing the VM's operations: %w", err)
	}
	var out []v1alpha2.VirtualMachineOperation
	for _, op := range list.Items {
		if op.Spec.Type == v1alpha2.OpEvict || op.Spec.Type == v1alpha2.OpMigrate {
			out = append(out, op)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreationTimestamp.Before(&out[j].CreationTimestamp) })
	return out, nil
}

// keepPlacement moves a running VM whose node no longer fits its nodeSelector, affinity or
// tolerations (edited since its pod was built: a node that changed under a placement nobody
// edited is left to its administrator, as Kubernetes leaves pods) to a node that does, by an Evict operation named
// as Deckhouse's (nodeplacement-update-*). A VM whose node still fits stays. While the VM
// migrates already, no other migration starts.
func (r *Reconciler) keepPlacement(ctx context.Context, s *scope, migrating bool) error {
	vm, nodeName := s.vm, s.active.Spec.NodeName
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: nodeName}, node); err != nil {
		return client.IgnoreNotFound(err) // a node that is gone is fencing's business
	}
	why := placementMisfit(vm, node)
	if why == "" {
		return nil
	}
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes); err != nil {
		return err
	}
	var fits []string
	unfit := map[string]string{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if n.Name == nodeName {
			continue
		}
		switch {
		case n.Spec.Unschedulable:
			unfit[n.Name] = "cordoned"
		case !nodeReady(n):
			unfit[n.Name] = "not Ready"
		default:
			if w := placementMisfit(vm, n); w != "" {
				unfit[n.Name] = w
			} else {
				fits = append(fits, n.Name)
			}
		}
	}
	s.run.placementReason = v1alpha2.ReasonPlacementNotMatched
	s.run.placementMessage = fmt.Sprintf("node %s %s", nodeName, why)
	if len(fits) == 0 {
		s.run.placementReason = v1alpha2.ReasonPlacementUnsatisfiable
		s.run.placementMessage += "; no other node fits either, so no live migration can move the VM: " + unfitText(unfit)
		s.requeue = max(s.requeue, 30*time.Second) // node changes reach the VM through its next reconcile
		return nil
	}
	if migrating {
		if op := s.run.migration; op != nil {
			s.run.placementMessage += fmt.Sprintf("; moving the VM by live migration (operation %s)", op.Name)
		} else {
			s.run.placementMessage += "; waiting for the migration under way"
		}
		return nil
	}
	ops, err := r.migrationOps(ctx, vm)
	if err != nil {
		return err
	}
	for i := len(ops) - 1; i >= 0; i-- {
		op := &ops[i]
		if op.Labels[v1alpha2.LabelNodePlacement] != nodeName || op.Status.Phase != v1alpha2.OpFailed {
			continue
		}
		if wait := opEnd(op).Add(placementRetry).Sub(r.Now()); wait > 0 {
			s.run.placementMessage += fmt.Sprintf("; operation %s failed (%s), the next migration starts in %s", op.Name, opFailure(op), wait.Round(time.Second))
			s.requeue = max(s.requeue, wait)
			return nil
		}
		break
	}
	op := &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: NodePlacementOpPrefix,
			Namespace:    vm.Namespace,
			Labels:       map[string]string{v1alpha2.LabelNodePlacement: nodeName},
			Annotations:  map[string]string{v1alpha2.AnnotationWorkloadUpdate: "true"},
		},
		Spec: v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: vm.Name},
	}
	if err := r.Client.Create(ctx, op); err != nil {
		return fmt.Errorf("creating the placement migration: %w", err)
	}
	s.run.migration = op
	s.run.placementMessage += fmt.Sprintf("; moving the VM by live migration (operation %s)", op.Name)
	r.Recorder.Eventf(vm, corev1.EventTypeNormal, "NodePlacementUpdate", "Node %s %s: moving the VM by live migration (operation %s)", nodeName, why, op.Name)
	ctrl.LoggerFrom(ctx).Info("Started a placement migration", "operation", op.Name, "node", nodeName)
	return nil
}

// placementMisfit says why node does not fit the VM's placement ("" when it does): its
// nodeSelector and required node affinity, and the NoSchedule and NoExecute taints it must
// tolerate (the node.kubernetes.io/ ones, which Kubernetes sets on cordoned and failing
// nodes, and Ferry's unreachable taint are the drain's and fencing's business).
func placementMisfit(vm *v1alpha2.VirtualMachine, node *corev1.Node) string {
	affinity := nodeaffinity.NewRequiredNodeAffinity(vm.Spec.NodeSelector, vm.Spec.Affinity.ForPod())
	if ok, err := affinity.Match(node); err != nil {
		return "cannot be matched: the VM's node affinity is invalid: " + err.Error()
	} else if !ok {
		return "does not match the VM's nodeSelector/affinity"
	}
	filter := func(t *corev1.Taint) bool {
		return (t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute) &&
			!strings.HasPrefix(t.Key, "node.kubernetes.io/") && t.Key != v1alpha2.TaintUnreachable
	}
	if t, bad := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), node.Spec.Taints, vm.Spec.Tolerations, filter, true); bad {
		return fmt.Sprintf("has taint %s=%s:%s the VM does not tolerate", t.Key, t.Value, t.Effect)
	}
	return ""
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func unfitText(unfit map[string]string) string {
	if len(unfit) == 0 {
		return "it is the only node"
	}
	names := make([]string, 0, len(unfit))
	for n := range unfit {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " " + unfit[n]
	}
	return strings.Join(parts, "; ")
}

func opEnd(op *v1alpha2.VirtualMachineOperation) time.Time {
	if c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil {
		return c.LastTransitionTime.Time
	}
	return op.CreationTimestamp.Time
}

func opFailure(op *v1alpha2.VirtualMachineOperation) string {
	if c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil {
		return c.Reason + ": " + c.Message
	}
	return string(op.Status.Phase)
}
