package vmclass

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Of reads the class vm names; nil when there is no such class.
func Of(ctx context.Context, c client.Reader, vm *v1alpha2.VirtualMachine) (*v1alpha2.VirtualMachineClass, error) {
	class := &v1alpha2.VirtualMachineClass{}
	if err := c.Get(ctx, client.ObjectKey{Name: ClassName(vm)}, class); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading VirtualMachineClass %s: %w", ClassName(vm), err)
	}
	return class, nil
}

// Effective is the VM as its class completes it, a copy that launcher pods (vm, migration)
// and placement checks (evacuation) are built from:
//   - the class's nodeSelector (matchLabels and matchExpressions) is ANDed into the VM's
//     required node affinity, in every one of its terms: a node must satisfy both the VM's
//     placement and the class's;
//   - the class's tolerations are added to the VM's, except where the VM tolerates the same
//     key and effect itself (the VM's have priority, as in Deckhouse);
//   - a VM without coreFraction gets the defaultCoreFraction of the policy for its cores.
//
// class nil leaves the VM as it is.
func Effective(vm *v1alpha2.VirtualMachine, class *v1alpha2.VirtualMachineClass) *v1alpha2.VirtualMachine {
	out := vm.DeepCopy()
	if class == nil {
		return out
	}
	spec := &out.Spec
	if reqs := classRequirements(class.Spec.NodeSelector); len(reqs) > 0 {
		if spec.Affinity == nil {
			spec.Affinity = &v1alpha2.VirtualMachineAffinity{}
		}
		if spec.Affinity.NodeAffinity == nil {
			spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
		}
		req := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
		if req == nil || len(req.NodeSelectorTerms) == 0 {
			req = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{}}}
		}
		// Terms are alternatives: the class's requirements must hold in each of them.
		for i := range req.NodeSelectorTerms {
			req.NodeSelectorTerms[i].MatchExpressions = append(req.NodeSelectorTerms[i].MatchExpressions, reqs...)
		}
		spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = req
	}
	for _, t := range class.Spec.Tolerations {
		if !slices.ContainsFunc(spec.Tolerations, func(v corev1.Toleration) bool { return v.Key == t.Key && v.Effect == t.Effect }) {
			spec.Tolerations = append(spec.Tolerations, t)
		}
	}
	if spec.CPU.CoreFraction == "" {
		if p := policyFor(class, spec.CPU.Cores); p != nil && p.DefaultCoreFraction != nil {
			spec.CPU.CoreFraction = strconv.Itoa(DefaultCoreFraction(p)) + "%"
		}
	}
	return out
}

// classRequirements are a class's nodeSelector as node selector requirements: matchLabels
// (in key order) as In, then matchExpressions.
func classRequirements(ns v1alpha2.NodeSelector) []corev1.NodeSelectorRequirement {
	keys := make([]string, 0, len(ns.MatchLabels))
	for k := range ns.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]corev1.NodeSelectorRequirement, 0, len(keys)+len(ns.MatchExpressions))
	for _, k := range keys {
		out = append(out, corev1.NodeSelectorRequirement{Key: k, Operator: corev1.NodeSelectorOpIn, Values: []string{ns.MatchLabels[k]}})
	}
	for _, e := range ns.MatchExpressions {
		out = append(out, *e.DeepCopy())
	}
	return out
}
