package migration

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
	spec.Affinity = vm.Spec.Affinity.DeepCopy()
	spec.Tolerations = vm.Spec.Tolerations
	c := &spec.Containers[0]
	c.Args = append(slices.DeleteFunc(slices.Clone(c.Args), func(a string) bool { return a == "--incoming" }), "--incoming")

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
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    source.GenerateName,
			Namespace:       source.Namespace,
			Labels:          labels,
			OwnerReferences: source.OwnerReferences,
		},
		Spec: spec,
	}
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
	reader := client.Reader(r.Client)
	if r.APIReader != nil {
		reader = r.APIReader
	}
	var pods corev1.PodList
	if err := reader.List(ctx, &pods, client.InNamespace(op.Namespace), client.MatchingLabels{v1alpha2.LabelMigrationTarget: op.Name}); err != nil {
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

// patchVMState changes the VM's status.migrationState only.
func (r *Reconciler) patchVMState(ctx context.Context, vm *v1alpha2.VirtualMachine, change func(*v1alpha2.MigrationState)) error {
	orig := vm.DeepCopy()
	if vm.Status.MigrationState == nil {
		vm.Status.MigrationState = &v1alpha2.MigrationState{}
	}
	change(vm.Status.MigrationState)
	return client.IgnoreNotFound(r.Client.Status().Patch(ctx, vm, client.MergeFrom(orig)))
}
