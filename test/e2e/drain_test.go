package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// vmSnapshot is what must survive a drain: the address and the guest's count.
type vmSnapshot struct {
	name, node, ip string
	count          int
}

// packOnto creates VMs that all start on node: the other nodes are cordoned meanwhile.
func packOnto(t *testing.T, node string, names ...string) {
	t.Helper()
	createOn(t, node, "", names...)
}

func vmsOn(t *testing.T, node string) []vmSnapshot {
	t.Helper()
	var list v1alpha2.VirtualMachineList
	if err := cl.c.List(t.Context(), &list, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	var out []vmSnapshot
	for _, vm := range list.Items {
		if vm.Status.NodeName == node && vm.Status.Phase == v1alpha2.MachineRunning {
			out = append(out, vmSnapshot{name: vm.Name, node: node, ip: vm.Status.IPAddress, count: waitHeartbeat(t, vm.Name, 0, time.Minute)})
		}
	}
	return out
}

// assertMovedOff checks that every VM left node live: Running elsewhere, same address,
// the guest still counting from where it was.
func assertMovedOff(t *testing.T, node string, before []vmSnapshot) {
	t.Helper()
	for _, s := range before {
		vm := waitRunning(t, s.name, time.Minute)
		if vm.Status.NodeName == node {
			t.Errorf("%s still on %s", s.name, node)
		}
		if vm.Status.IPAddress != s.ip {
			t.Errorf("%s: address %s → %s", s.name, s.ip, vm.Status.IPAddress)
		}
		if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionEvictionRequired); c != nil {
			t.Errorf("%s still has %s: %s", s.name, c.Type, c.Message)
		}
		assertContinued(t, s.name, s.count)
	}
}

func unschedulable(t *testing.T, node string) bool {
	t.Helper()
	n := &corev1.Node{}
	if err := cl.c.Get(t.Context(), client.ObjectKey{Name: node}, n); err != nil {
		t.Fatal(err)
	}
	return n.Spec.Unschedulable
}

// TestDrainMovesVMsLive: both of the seed's drain commands, verbatim, on a node with 3 VMs
// (and whatever else runs there): each VM runs on with its address and its guest's count,
// the node stays cordoned and takes no new VM until uncordoned.
func TestDrainMovesVMsLive(t *testing.T) {
	names := []string{"d1", "d2", "d3"}
	t.Cleanup(func() {
		_, _ = ferry(t, "k", "uncordon", "node-1", "node-2")
		for _, n := range append(names, "d4") {
			deleteVM(t, n)
		}
	})
	packOnto(t, "node-1", names...)
	before := vmsOn(t, "node-1")
	if len(before) < 3 {
		t.Fatalf("%d VMs on node-1, want at least 3", len(before))
	}

	started := time.Now()
	out := mustFerry(t, "k", "drain", "node-1", "--ignore-daemonsets", "--delete-emptydir-data")
	t.Logf("drain of node-1 with %d VMs took %s", len(before), time.Since(started).Round(100*time.Millisecond))
	if !strings.Contains(out, "node/node-1 drained") {
		t.Errorf("drain said:\n%s", out)
	}
	if !unschedulable(t, "node-1") {
		t.Error("node-1 is not cordoned after drain")
	}
	assertMovedOff(t, "node-1", before)
	if again := vmsOn(t, "node-1"); len(again) != 0 {
		t.Errorf("VMs on the drained node: %v", again)
	}
	var ops v1alpha2.VirtualMachineOperationList
	if err := cl.c.List(t.Context(), &ops, client.InNamespace("default"), client.MatchingLabels{v1alpha2.LabelEvacuation: "node-1"}); err != nil {
		t.Fatal(err)
	}
	if len(ops.Items) < len(before) {
		t.Errorf("%d evacuation operations for %d VMs", len(ops.Items), len(before))
	}

	// A new VM does not start on the cordoned node.
	apply(t, fmt.Sprintf(pinnedVM, "d4", ""))
	if n := waitRunning(t, "d4", 2*time.Minute).Status.NodeName; n == "node-1" {
		t.Errorf("new VM d4 started on the cordoned node-1")
	}
	mustFerry(t, "k", "uncordon", "node-1")
	if unschedulable(t, "node-1") {
		t.Error("node-1 still cordoned after uncordon")
	}

	// The seed's second form: only the VM pods, chosen by their label.
	target := "node-2"
	if len(vmsOn(t, target)) == 0 {
		target = "node-3"
	}
	before = vmsOn(t, target)
	out = mustFerry(t, "k", "drain", target, "--pod-selector", "vm.kubevirt.internal.virtualization.deckhouse.io/name", "--delete-emptydir-data")
	if !strings.Contains(out, "node/"+target+" drained") {
		t.Errorf("drain said:\n%s", out)
	}
	assertMovedOff(t, target, before)
	mustFerry(t, "k", "uncordon", target)
}

// TestDrainBlockedByVMThatCannotMove: a VM pinned to its node makes the drain wait, with
// a message naming the VM and the reason; the VM keeps running; the dry run says so first;
// uncordoning ends the evacuation.
func TestDrainBlockedByVMThatCannotMove(t *testing.T) {
	apply(t, fmt.Sprintf(pinnedVM, "stuck", "kubernetes.io/hostname: node-3"))
	t.Cleanup(func() { _, _ = ferry(t, "k", "uncordon", "node-3"); deleteVM(t, "stuck") })
	vm := waitRunning(t, "stuck", 2*time.Minute)
	pod := activePod(t, "stuck")
	last := waitHeartbeat(t, "stuck", 0, time.Minute)

	plan := mustFerry(t, "v", "drain", "node-3", "--dry-run")
	t.Logf("dry run:\n%s", plan)
	if !strings.Contains(plan, "default/stuck") || !strings.Contains(plan, "yes: NoTargetNode") {
		t.Errorf("dry run does not say that stuck blocks:\n%s", plan)
	}
	if unschedulable(t, "node-3") {
		t.Fatal("the dry run cordoned node-3")
	}

	out, err := ferry(t, "k", "drain", "node-3", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout", "20s")
	if err == nil {
		t.Fatalf("drain succeeded with a VM that cannot move:\n%s", out)
	}
	if !strings.Contains(out, "VM default/stuck cannot be live-migrated off node node-3") || !strings.Contains(out, "no other node fits") {
		t.Errorf("drain output does not say why:\n%s", out)
	}
	after := waitRunning(t, "stuck", time.Minute)
	if after.Status.NodeName != vm.Status.NodeName || activePod(t, "stuck") != pod {
		t.Errorf("the VM was touched: node %s pod %s", after.Status.NodeName, activePod(t, "stuck"))
	}
	if c := meta.FindStatusCondition(after.Status.Conditions, v1alpha2.VMConditionMigratable); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "NoTargetNode" {
		t.Errorf("Migratable condition %+v", c)
	}
	if c := meta.FindStatusCondition(after.Status.Conditions, v1alpha2.VMConditionEvictionRequired); c == nil || c.Reason != v1alpha2.ReasonNodeDrained {
		t.Errorf("EvictionRequired condition %+v", c)
	}
	eventually(t, 10*time.Second, "a NotMigratable event for stuck", func() (bool, string) {
		ev, _ := ferry(t, "k", "get", "events", "--field-selector", "involvedObject.name=stuck")
		return strings.Contains(ev, "NotMigratable"), ev
	})
	waitHeartbeat(t, "stuck", last, time.Minute)

	mustFerry(t, "k", "uncordon", "node-3")
	eventually(t, 30*time.Second, "evacuation ended by uncordon", func() (bool, string) {
		vm := getVM(t, "stuck")
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionEvictionRequired)
		_, marked := vm.Annotations[v1alpha2.AnnotationEvacuateFrom]
		return c == nil && !marked, fmt.Sprintf("condition %v, marked %v", c, marked)
	})
}

// TestEvictionAPIAndCancel: an eviction through the API (not drain) of a VM's pod is
// refused with 429 and starts an evacuation; deleting that evacuation operation cancels
// the move: the VM stays, the mark goes, no new evacuation starts.
func TestEvictionAPIAndCancel(t *testing.T) {
	slowMigrations(t)
	vm := waitRunning(t, "linux-vm", 2*time.Minute)
	pod := activePod(t, "linux-vm")
	eviction := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: pod}}
	err := cl.c.SubResource("eviction").Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: pod}}, eviction)
	if !apierrors.IsTooManyRequests(err) || !strings.Contains(err.Error(), "VM default/linux-vm") {
		t.Fatalf("eviction answered %v, want 429 naming the VM", err)
	}
	var op *v1alpha2.VirtualMachineOperation
	eventually(t, 30*time.Second, "an evacuation operation transferring", func() (bool, string) {
		var ops v1alpha2.VirtualMachineOperationList
		if err := cl.c.List(t.Context(), &ops, client.InNamespace("default"), client.MatchingLabels{v1alpha2.LabelEvacuation: vm.Status.NodeName}); err != nil {
			return false, err.Error()
		}
		for i := range ops.Items {
			o := &ops.Items[i]
			if o.Spec.VirtualMachineName == "linux-vm" && o.Status.Phase == v1alpha2.OpInProgress && o.Status.Migration != nil && o.Status.Migration.Phase == v1alpha2.MigrationTransferring {
				op = o
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d evacuation operations", len(ops.Items))
	})
	c := meta.FindStatusCondition(getVM(t, "linux-vm").Status.Conditions, v1alpha2.VMConditionEvictionRequired)
	if c == nil || c.Reason != v1alpha2.ReasonEvictionRequested {
		t.Errorf("EvictionRequired %+v, want reason %s", c, v1alpha2.ReasonEvictionRequested)
	}
	if err := cl.c.Delete(t.Context(), op); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "evacuation cancelled", func() (bool, string) {
		vm := getVM(t, "linux-vm")
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionEvictionRequired)
		_, marked := vm.Annotations[v1alpha2.AnnotationEvacuateFrom]
		return c == nil && !marked && vm.Status.Phase == v1alpha2.MachineRunning, fmt.Sprintf("%s, condition %v, marked %v", vm.Status.Phase, c, marked)
	})
	after := getVM(t, "linux-vm")
	if after.Status.NodeName != vm.Status.NodeName || activePod(t, "linux-vm") != pod {
		t.Errorf("VM moved after the cancel: node %s pod %s", after.Status.NodeName, activePod(t, "linux-vm"))
	}
	var ops v1alpha2.VirtualMachineOperationList
	if err := cl.c.List(t.Context(), &ops, client.InNamespace("default"), client.MatchingLabels{v1alpha2.LabelEvacuation: vm.Status.NodeName}); err != nil {
		t.Fatal(err)
	}
	for _, o := range ops.Items {
		if o.Spec.VirtualMachineName == "linux-vm" && o.Name != op.Name && o.CreationTimestamp.After(op.CreationTimestamp.Time) {
			t.Errorf("a new evacuation %s started after the cancel", o.Name)
		}
	}
	assertOneQEMU(t, "linux-vm")
}
