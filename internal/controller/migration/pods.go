package migration

import (
	"context"
	"encoding/json"
	"maps"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// sourcePod is the VM's live launcher pod that is not a migration target.
func (r *Reconciler) sourcePod(ctx context.Context, vm *v1alpha2.VirtualMachine) (*corev1.Pod, error) {
	var list corev1.PodList
	if err := r.Client.List(ctx, &list, client.InNamespace(vm.Namespace), client.MatchingFields{launcherpod.IndexVM: vm.Name}); err != nil {
		return nil, err
	}
	var live []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.UID != vm.UID || !p.DeletionTimestamp.IsZero() || launcherpod.Ended(p) {
			continue
		}
		if _, target := p.Labels[v1alpha2.LabelMigrationTarget]; target {
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return nil, nil
	}
	sort.Slice(live, func(i, j int) bool { return live[j].CreationTimestamp.Before(&live[i].CreationTimestamp) })
	return live[0], nil
}

func (r *Reconciler) pod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	if name == "" {
		return nil, nil
	}
	p := &corev1.Pod{}
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return p, nil
}

// targetPod is the source pod's twin, waiting for the incoming VM on another node. Its
// placement is the VM's own (not the source pod's, which may carry an earlier migration's
// "not that node"), plus "not the source node" and the operation's node selector.
func targetPod(op *v1alpha2.VirtualMachineOperation, source *corev1.Pod, vm *v1alpha2.VirtualMachine) *corev1.Pod {
	labels := maps.Clone(source.Labels)
	labels[v1alpha2.LabelMigrationTarget] = op.Name
	spec := *source.Spec.DeepCopy()
	spec.NodeName = ""
	spec.NodeSelector = maps.Clone(vm.Spec.NodeSelector)
	spec.Affinity = vm.Spec.Affinity.ForPod()
	spec.Tolerations = vm.Spec.Tolerations
	c := &spec.Containers[0]
	// The target takes the stream from the source's node only (over migration TLS, the
	// certificate of that node).
	c.Args = append(withHotplugLayout(withoutIncoming(c.Args), source), "--incoming", "--incoming-from", source.Spec.NodeName)

	notSource := corev1.NodeSelectorRequirement{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpNotIn, Values: []string{source.Spec.NodeName}}
	if spec.Affinity == nil {
		spec.Affinity = &corev1.Affinity{}
	}
	if spec.Affinity.NodeAffinity == nil {
		spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	req := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	if req == nil || len(req.NodeSelectorTerms) == 0 {
		req = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{}}}
	}
	// Terms are alternatives: "not the source node" must hold in each of them.
	for i := range req.NodeSelectorTerms {
		req.NodeSelectorTerms[i].MatchExpressions = append(req.NodeSelectorTerms[i].MatchExpressions, notSource)
	}
	spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = req
	if op.Spec.Migrate != nil && len(op.Spec.Migrate.NodeSelector) > 0 {
		if spec.NodeSelector == nil {
			spec.NodeSelector = map[string]string{}
		}
		maps.Copy(spec.NodeSelector, op.Spec.Migrate.NodeSelector)
	}
	// The target runs what the source runs, so it records the same spec (the VM
	// controller tells from it what awaits a restart).
	var ann map[string]string
	if applied, ok := source.Annotations[v1alpha2.AnnotationAppliedSpec]; ok {
		ann = map[string]string{v1alpha2.AnnotationAppliedSpec: applied}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    source.GenerateName,
			Namespace:       source.Namespace,
			Labels:          labels,
			Annotations:     ann,
			OwnerReferences: source.OwnerReferences,
		},
		Spec: spec,
	}
}

// withHotplugLayout gives a target's launcher the hot-plugged disks the source's QEMU has,
// at their slots (QEMU needs the same devices on both sides), instead of those the source
// started with. pending waited for them to settle (hotplugBusy).
func withHotplugLayout(args []string, source *corev1.Pod) []string {
	return launcherpod.WithHotplugDisks(args, launcherpod.HotplugLayout(source))
}

// hotplugBusy says why the source's hot-plugged disks are changing ("" when they are not):
// a migration waits for them, and the VM controller changes none while the VM migrates.
func hotplugBusy(source *corev1.Pod) string {
	return launcherpod.HotplugUnsettled(source)
}

// hotplugSlots are the hot-plugged disks a target pod starts with, for the source to
// check against its own (MigrationRequest.BlockDevices).
func hotplugSlots(target *corev1.Pod) []v1alpha2.HotplugSlot {
	var out []v1alpha2.HotplugSlot
	for _, d := range launcherpod.HotplugDisksOf(target.Spec.Containers[0].Args) {
		out = append(out, v1alpha2.HotplugSlot{Slot: d.Slot, Path: d.Path})
	}
	return out
}

// withoutIncoming drops an earlier migration's --incoming and --incoming-from (with its
// value) from a launcher's arguments.
func withoutIncoming(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--incoming":
		case args[i] == "--incoming-from":
			i++
		case strings.HasPrefix(args[i], "--incoming-from="):
		default:
			out = append(out, args[i])
		}
	}
	return out
}

// annotate merges annotations into a pod; a nil value removes one.
func (r *Reconciler) annotate(ctx context.Context, ns, name string, ann map[string]any) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	return r.Client.Patch(ctx, p, client.RawPatch(types.MergePatchType, patch))
}

// annotateLabels merges labels into a pod; a nil value removes one.
func (r *Reconciler) annotateLabels(ctx context.Context, p *corev1.Pod, labels map[string]any) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	return r.Client.Patch(ctx, p.DeepCopy(), client.RawPatch(types.MergePatchType, patch))
}

// targetsOf lists the pods still labelled as the operation's migration target, read from
// the API server: a pod this controller has just created may not be in its cache yet.
func (r *Reconciler) targetsOf(ctx context.Context, op *v1alpha2.VirtualMachineOperation) ([]corev1.Pod, error) {
	var pods corev1.PodList
	if err := r.reader().List(ctx, &pods, client.InNamespace(op.Namespace), client.MatchingLabels{v1alpha2.LabelMigrationTarget: op.Name}); err != nil {
		return nil, err
	}
	return pods.Items, nil
}

// deleteTargets removes every pod labelled as the operation's migration target. A promoted
// target has lost that label and stays.
func (r *Reconciler) deleteTargets(ctx context.Context, op *v1alpha2.VirtualMachineOperation) error {
	targets, err := r.targetsOf(ctx, op)
	if err != nil {
		return err
	}
	for i := range targets {
		if targets[i].DeletionTimestamp.IsZero() {
			if err := r.deletePod(ctx, op.Namespace, targets[i].Name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Reconciler) deletePod(ctx context.Context, ns, name string) error {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	return client.IgnoreNotFound(r.Client.Delete(ctx, p, client.GracePeriodSeconds(1)))
}

// patchVMState changes the VM's status.migrationState only. The write carries the VM's
// resourceVersion: other controllers write the VM's status too (the VM controller on every
// reconcile), and a merge patch computed against a copy read before their write can lose
// an update — a field this copy did not know of stays on the server (an endTimestamp left
// on a migration being opened), and a field this copy already held is not sent. On a
// conflict the VM is read again past the cache and change applied to what it holds now,
// a few times; a conflict that outlasts them is returned, and the operation's reconcile
// is redone. vm holds what was written.
func (r *Reconciler) patchVMState(ctx context.Context, vm *v1alpha2.VirtualMachine, change func(*v1alpha2.MigrationState)) error {
	cur := vm.DeepCopy()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		orig := cur.DeepCopy()
		if cur.Status.MigrationState == nil {
			cur.Status.MigrationState = &v1alpha2.MigrationState{}
		}
		change(cur.Status.MigrationState)
		err := r.Client.Status().Patch(ctx, cur, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		if apierrors.IsConflict(err) {
			fresh := &v1alpha2.VirtualMachine{}
			if gerr := r.reader().Get(ctx, client.ObjectKeyFromObject(vm), fresh); gerr != nil {
				return gerr
			}
			cur = fresh
		}
		return err
	})
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	*vm = *cur
	return nil
}

// reader reads past the controller's cache when it can.
func (r *Reconciler) reader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}
