package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// classForTwoNodes is a class in the shape of the admin guide's: a CPU model, a node
// selector (node-2 and node-3 only) and one sizing policy (1–2 cores at 50 or 100 %).
const classForTwoNodes = `apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachineClass
metadata:
  name: e2e-two-nodes
spec:
  cpu:
    type: Model
    model: Nehalem
  nodeSelector:
    matchExpressions:
      - key: kubernetes.io/hostname
        operator: In
        values: [node-2, node-3]
  sizingPolicies:
    - cores: {min: 1, max: 2}
      coreFractions: [50, 100]
`

// classedVM is pinnedVM (without a node selector) of that class, with cores at fraction.
func classedVM(name, cores, fraction string) string {
	return strings.Replace(fmt.Sprintf(pinnedVM, name, ""), "  cpu: {cores: 1}",
		fmt.Sprintf("  virtualMachineClassName: e2e-two-nodes\n  cpu: {cores: %s, coreFraction: %q}", cores, fraction), 1)
}

// TestClassEnforcementAndPlacementMigration: a VM's class decides what it may ask for
// (sizes outside the class's policy are refused, saying what the policy allows), the CPU
// QEMU gives it and the nodes it runs on; a change of the VM's placement that its node no
// longer fits moves it by live migration (Deckhouse's nodeplacement-update), guest and
// address kept.
func TestClassEnforcementAndPlacementMigration(t *testing.T) {
	apply(t, classForTwoNodes)
	t.Cleanup(func() { _, _ = ferry(t, "k", "delete", "vmclass", "e2e-two-nodes", "--wait=false") })
	eventually(t, time.Minute, "class e2e-two-nodes Ready", func() (bool, string) {
		out, _ := ferry(t, "k", "get", "vmclass", "e2e-two-nodes", "-o", "jsonpath={.status.phase} {.status.availableNodes}")
		return strings.HasPrefix(out, "Ready"), out
	})

	for _, c := range []struct{ cores, fraction, want string }{
		{"4", "100%", "cores"},
		{"1", "10%", "coreFraction"},
	} {
		out, err := applyErr(t, classedVM("classy-bad", c.cores, c.fraction))
		if err == nil || !strings.Contains(out, "e2e-two-nodes") || !strings.Contains(out, c.want) {
			t.Errorf("cores %s at %s in a class of 1–2 cores at 50/100 %%: err %v, %s", c.cores, c.fraction, err, out)
		}
		t.Logf("refused: %s", strings.TrimSpace(out))
		_, _ = ferry(t, "k", "delete", "vd", "classy-bad-root", "--ignore-not-found", "--wait=false")
	}

	apply(t, classedVM("classy", "1", "50%"))
	t.Cleanup(func() { deleteVM(t, "classy") })
	vm := waitRunning(t, "classy", 2*time.Minute)
	from := vm.Status.NodeName
	if from != "node-2" && from != "node-3" {
		t.Fatalf("a VM of a class for node-2 and node-3 runs on %s", from)
	}
	q := qemuProcesses(vmQEMUMarker("classy"))
	if len(q) != 1 || !strings.Contains(q[0], "-cpu Nehalem") {
		t.Errorf("QEMU of a VM of class model Nehalem: %q", q)
	}
	last := waitHeartbeat(t, "classy", 0, time.Minute)

	// The VM is now asked to run on the other node of the two: it moves there live.
	to := otherNode(from, "node-1")
	start := time.Now()
	mustFerry(t, "k", "patch", "vm", "classy", "--type=merge", "-p", fmt.Sprintf(`{"spec":{"nodeSelector":{"kubernetes.io/hostname":%q}}}`, to))
	eventually(t, 3*time.Minute, "VM classy moved to "+to, func() (bool, string) {
		got := getVM(t, "classy")
		return got.Status.NodeName == to && string(got.Status.Phase) == "Running", fmt.Sprintf("%s on %s", got.Status.Phase, got.Status.NodeName)
	})
	after := getVM(t, "classy")
	if after.Status.IPAddress != vm.Status.IPAddress {
		t.Errorf("address %s before the move, %s after", vm.Status.IPAddress, after.Status.IPAddress)
	}
	// The VM's status may show the new node a moment before the operation is marked done.
	eventually(t, time.Minute, "a completed nodeplacement-update Evict of classy", func() (bool, string) {
		ops := mustFerry(t, "k", "get", "vmop", "-o", "custom-columns=NAME:.metadata.name,TYPE:.spec.type,PHASE:.status.phase,VM:.spec.virtualMachineName", "--no-headers")
		for _, l := range strings.Split(ops, "\n") {
			f := strings.Fields(l)
			if len(f) == 4 && strings.HasPrefix(f[0], "nodeplacement-update-") && f[1] == "Evict" && f[2] == "Completed" && f[3] == "classy" {
				return true, ""
			}
		}
		return false, ops
	})
	assertContinued(t, "classy", last)
	t.Logf("placement change %s → %s: moved live in %s", from, to, since(start))
}
