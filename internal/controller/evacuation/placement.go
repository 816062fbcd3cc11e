package evacuation

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// Reasons of the Migratable condition.
const (
	ReasonMigratable = "Migratable"
	ReasonNotRunning = "VirtualMachineNotRunning"
	// ReasonGuestFault: the guest panicked or QEMU paused it on an I/O error (Degraded).
	ReasonGuestFault     = "GuestDegraded"
	ReasonNoTargetNode   = "NoTargetNode"
	ReasonMigrationFails = "MigrationKeepsFailing"
)

// Assessment says whether a VM can be live-migrated off its node now, and where to.
type Assessment struct {
	Migratable bool
	Reason     string
	Message    string
	// Source is the node the VM runs on.
	Source string
	// Targets are the nodes that fit the VM, roomiest first.
	Targets []string
	// Unfit says, for each other node, why it does not fit.
	Unfit map[string]string
}

// Assess judges vm, whose active launcher pod is pod, against the cluster's nodes and the
// launcher pods on them: a target must be Ready, schedulable, tolerated, match the VM's
// nodeSelector and required node affinity, and have memory left for the VM's pod. The
// scheduler decides for real; this is what a drain can tell the operator beforehand.
func Assess(vm *v1alpha2.VirtualMachine, pod *corev1.Pod, nodes []corev1.Node, pods []corev1.Pod) Assessment {
	a := Assessment{Unfit: map[string]string{}}
	if pod != nil {
		a.Source = pod.Spec.NodeName
	}
	switch {
	case NotMeantToRun(vm):
		a.Reason, a.Message = ReasonNotRunning, fmt.Sprintf("the VM is %s, not running on a node", orNone(string(vm.Status.Phase)))
		return a
	case pod != nil && a.Source != "" && vm.Status.Phase == v1alpha2.MachineDegraded:
		a.Reason, a.Message = ReasonGuestFault, "the guest is Degraded (it panicked, or QEMU paused it on a disk I/O error): a live migration would carry a dead guest; restart or stop the VM"
		return a
	case pod == nil || a.Source == "" || vm.Status.Phase == v1alpha2.MachinePending || vm.Status.Phase == v1alpha2.MachineStarting ||
		!launcherpod.GuestRunning(pod) && vm.Status.Phase != v1alpha2.MachineMigrating:
		// One message from the VM's pod ending until its guest runs again, whichever of
		// those steps the VM is at: a restart after a node failure changed the condition
		// three times (removed with the pod, "starting", then True), a write each, at the
		// moment every VM of the node restarts.
		a.Reason, a.Message = ReasonNotRunning, "the guest is starting: it can move once it runs"
		return a
	}
	need := podMemory(pod)
	used := map[string]*resource.Quantity{}
	for i := range pods {
		p := &pods[i]
		if p.Spec.NodeName == "" || launcherpod.Ended(p) {
			continue
		}
		if used[p.Spec.NodeName] == nil {
			used[p.Spec.NodeName] = resource.NewQuantity(0, resource.BinarySI)
		}
		used[p.Spec.NodeName].Add(podMemory(p))
	}
	free := map[string]int64{}
	affinity := nodeaffinity.NewRequiredNodeAffinity(vm.Spec.NodeSelector, vm.Spec.Affinity.ForPod())
	for i := range nodes {
		n := &nodes[i]
		if n.Name == a.Source {
			continue
		}
		if why := unfit(n, vm, affinity, need, used[n.Name]); why != "" {
			a.Unfit[n.Name] = why
			continue
		}
		a.Targets = append(a.Targets, n.Name)
		f := n.Status.Allocatable.Memory().DeepCopy()
		if u := used[n.Name]; u != nil {
			f.Sub(*u)
		}
		free[n.Name] = f.Value()
	}
	sort.SliceStable(a.Targets, func(i, j int) bool { return free[a.Targets[i]] > free[a.Targets[j]] })
	if len(a.Targets) == 0 {
		a.Reason, a.Message = ReasonNoTargetNode, "no other node fits the VM: "+a.unfitText()
		return a
	}
	a.Migratable, a.Reason = true, ReasonMigratable
	// Not the list of targets: it changes whenever any VM moves or any node is cordoned,
	// and the condition's message is written to every VM's status each time it changes (at
	// 3,000 VMs that was a status write storm during a drain). Targets has it.
	a.Message = "another node fits the VM"
	return a
}

// NotMeantToRun tells whether the VM is stopped or on its way to be (its Migratable
// condition goes once it has no pod), as against one that is starting or restarting.
func NotMeantToRun(vm *v1alpha2.VirtualMachine) bool {
	switch vm.Status.Phase {
	case v1alpha2.MachineStopped, v1alpha2.MachineStopping, v1alpha2.MachineTerminating, "":
		return true
	}
	return false
}

func unfit(n *corev1.Node, vm *v1alpha2.VirtualMachine, affinity nodeaffinity.RequiredNodeAffinity, need resource.Quantity, used *resource.Quantity) string {
	if n.Spec.Unschedulable {
		return "cordoned"
	}
	if !nodeReady(n) {
		return "not Ready"
	}
	if ok, err := affinity.Match(n); err != nil {
		return "the VM's node affinity is invalid: " + err.Error()
	} else if !ok {
		return "does not match the VM's nodeSelector/affinity"
	}
	noSchedule := func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	}
	if t, bad := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), n.Spec.Taints, vm.Spec.Tolerations, noSchedule, true); bad {
		return fmt.Sprintf("has taint %s=%s:%s the VM does not tolerate", t.Key, t.Value, t.Effect)
	}
	if alloc := n.Status.Allocatable.Memory(); !alloc.IsZero() {
		left := alloc.DeepCopy()
		if used != nil {
			left.Sub(*used)
		}
		if left.Cmp(need) < 0 {
			return fmt.Sprintf("not enough memory (needs %s, %s free)", need.String(), left.String())
		}
	}
	return ""
}

func (a Assessment) unfitText() string {
	if len(a.Unfit) == 0 {
		return "it is the only node"
	}
	names := make([]string, 0, len(a.Unfit))
	for n := range a.Unfit {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " " + a.Unfit[n]
	}
	return strings.Join(parts, "; ")
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podMemory(p *corev1.Pod) resource.Quantity {
	q := resource.NewQuantity(0, resource.BinarySI)
	for _, c := range p.Spec.Containers {
		if m, ok := c.Resources.Requests[corev1.ResourceMemory]; ok {
			q.Add(m)
		}
	}
	return *q
}

func orNone(s string) string {
	if s == "" {
		return "without a phase yet"
	}
	return s
}
