package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/migration"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// The seed's operation, word for word but for the name.
const seedEvict = `apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachineOperation
metadata:
  name: migrate-linux-vm-%d
spec:
  # имя виртуальной машины
  virtualMachineName: linux-vm
  # операция для миграции
  type: Evict
`

// TestSeedLiveMigration: the seed's scenario. `get vm -w` shows Running → Migrating →
// Running with a new node and the same address, and the guest counts on without a reboot.
func TestSeedLiveMigration(t *testing.T) {
	before := waitRunning(t, "linux-vm", 2*time.Minute)
	last := waitHeartbeat(t, "linux-vm", 0, time.Minute)

	watch := exec.Command(cl.bin, "--state-dir", cl.stateDir, "k", "get", "vm", "-w")
	out, _ := watch.StdoutPipe()
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer watch.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()

	apply(t, fmt.Sprintf(seedEvict, time.Now().Unix()))
	var phases []string
	var final []string
	deadline := time.After(3 * time.Minute)
	for final == nil {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended; saw %v", phases)
			}
			f := strings.Fields(l)
			if len(f) < 5 || f[0] != "linux-vm" {
				continue
			}
			t.Logf("watch: %s", l)
			if len(phases) == 0 || phases[len(phases)-1] != f[1] {
				phases = append(phases, f[1])
			}
			if f[1] == "Running" && f[2] != before.Status.NodeName {
				final = f
			}
		case <-deadline:
			t.Fatalf("no Running on a new node within 3m; phases %v", phases)
		}
	}
	if strings.Join(phases, " → ") != "Running → Migrating → Running" {
		t.Errorf("phases %s, want Running → Migrating → Running", strings.Join(phases, " → "))
	}
	if final[3] != before.Status.IPAddress {
		t.Errorf("address changed: %s → %s", before.Status.IPAddress, final[3])
	}
	assertContinued(t, "linux-vm", last)
	assertOneQEMU(t, "linux-vm")
}

// assertContinued checks that the guest on its new node counts past last and did not boot.
func assertContinued(t *testing.T, vm string, last int) {
	t.Helper()
	after := waitHeartbeat(t, vm, last, time.Minute)
	log, _ := ferry(t, "v", "console", vm, "--log")
	if strings.Contains(log, "FERRY-GUEST BOOTED") {
		t.Errorf("the guest booted again on the target:\n%s", log)
	}
	c := guestCounters(t, vm)
	if len(c) == 0 || c[0] <= last-1 {
		t.Errorf("target log starts at %v, source had reached %d", c, last)
	}
	t.Logf("guest counter: source reached %d, target continued at %d…%d", last, c[0], after)
}

// assertOneQEMU checks that exactly one QEMU runs the VM.
func assertOneQEMU(t *testing.T, vm string) {
	t.Helper()
	eventually(t, 30*time.Second, "exactly one QEMU for "+vm, func() (bool, string) {
		q := qemuProcesses(vmQEMUMarker(vm))
		return len(q) == 1, fmt.Sprintf("%d: %v", len(q), q)
	})
}

// TestMigrateToChosenNode: `ferry v migrate --target-node-name` (d8's flag) puts the VM on that node.
func TestMigrateToChosenNode(t *testing.T) {
	vm := waitRunning(t, "linux-vm", 2*time.Minute)
	target := otherNode(vm.Status.NodeName, "")
	last := waitHeartbeat(t, "linux-vm", 0, time.Minute)
	mustFerry(t, "v", "migrate", "linux-vm", "--target-node-name", target, "--wait", "--timeout", "3m")
	after := waitRunning(t, "linux-vm", time.Minute)
	if after.Status.NodeName != target {
		t.Fatalf("on node %s, want %s", after.Status.NodeName, target)
	}
	if ms := after.Status.MigrationState; ms == nil || ms.Result != v1alpha2.MigrationSucceeded || ms.Target.Node != target || ms.Source.Node != vm.Status.NodeName {
		t.Errorf("migrationState %+v", ms)
	}
	assertContinued(t, "linux-vm", last)
}

func otherNode(not ...string) string {
	for i := 1; i <= cl.nodes; i++ {
		n := fmt.Sprintf("node-%d", i)
		skip := false
		for _, x := range not {
			skip = skip || x == n
		}
		if !skip {
			return n
		}
	}
	return ""
}

// setMigrationConfig writes the configuration object; an empty map removes it.
func setMigrationConfig(t *testing.T, data map[string]string) {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: migration.ConfigNamespace}}
	_ = cl.c.Create(ctx, ns)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: migration.ConfigNamespace, Name: migration.ConfigName}}
	_ = cl.c.Delete(ctx, cm)
	if len(data) == 0 {
		return
	}
	cm.Data = data
	if err := cl.c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
}

func newEvict(t *testing.T, vm string) *v1alpha2.VirtualMachineOperation {
	t.Helper()
	op := &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "evict-" + vm + "-", Namespace: "default"},
		Spec:       v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: vm},
	}
	if err := cl.c.Create(context.Background(), op); err != nil {
		t.Fatal(err)
	}
	return op
}

func getOp(t *testing.T, op *v1alpha2.VirtualMachineOperation) *v1alpha2.VirtualMachineOperation {
	t.Helper()
	got := &v1alpha2.VirtualMachineOperation{}
	if err := cl.c.Get(context.Background(), client.ObjectKeyFromObject(op), got); err != nil {
		t.Fatal(err)
	}
	return got
}

func waitTransferring(t *testing.T, op *v1alpha2.VirtualMachineOperation) *v1alpha2.VirtualMachineOperation {
	t.Helper()
	var got *v1alpha2.VirtualMachineOperation
	eventually(t, 2*time.Minute, "migration transferring", func() (bool, string) {
		got = getOp(t, op)
		ms := got.Status.Migration
		return ms != nil && ms.Phase == v1alpha2.MigrationTransferring && strings.Contains(got.Status.Progress, "%"), got.Status.Progress
	})
	return got
}

func waitOpEnd(t *testing.T, op *v1alpha2.VirtualMachineOperation, phase v1alpha2.OperationPhase) (*v1alpha2.VirtualMachineOperation, string) {
	t.Helper()
	var got *v1alpha2.VirtualMachineOperation
	reason := ""
	eventually(t, 3*time.Minute, "operation "+string(phase), func() (bool, string) {
		got = getOp(t, op)
		if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil {
			reason = c.Reason
		}
		return got.Status.Phase == phase, fmt.Sprintf("%s %s %s", got.Status.Phase, reason, got.Status.Progress)
	})
	return got, reason
}

// slowMigrations makes transfers take tens of seconds, to act during one.
func slowMigrations(t *testing.T) {
	setMigrationConfig(t, map[string]string{"migrationBandwidth": "4Mi"})
	t.Cleanup(func() { setMigrationConfig(t, nil) })
}

// TestCancelLeavesVMOnSource: deleting an operation mid-transfer aborts it; the VM keeps
// running on its node, the target pod goes away; a second migration meanwhile is refused.
func TestCancelLeavesVMOnSource(t *testing.T) {
	slowMigrations(t)
	vm := waitRunning(t, "linux-vm", 2*time.Minute)
	op := newEvict(t, "linux-vm")
	running := waitTransferring(t, op)
	target := running.Status.Migration.TargetPod

	second := newEvict(t, "linux-vm")
	_, reason := waitOpEnd(t, second, v1alpha2.OpFailed)
	if reason != v1alpha2.ReasonOtherMigration {
		t.Errorf("second migration failed with %s, want %s", reason, v1alpha2.ReasonOtherMigration)
	}

	last := waitHeartbeat(t, "linux-vm", 0, time.Minute)
	if err := cl.c.Delete(context.Background(), op); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "target pod gone", func() (bool, string) {
		err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: target}, &corev1.Pod{})
		return client.IgnoreNotFound(err) == nil && err != nil, fmt.Sprint(err)
	})
	after := waitRunning(t, "linux-vm", time.Minute)
	if after.Status.NodeName != vm.Status.NodeName {
		t.Errorf("VM moved to %s after cancel", after.Status.NodeName)
	}
	waitHeartbeat(t, "linux-vm", last, time.Minute)
	assertOneQEMU(t, "linux-vm")
}

// TestTargetDeathLeavesVMOnSource: the target's QEMU killed mid-transfer fails the
// operation; the guest keeps running on the source.
func TestTargetDeathLeavesVMOnSource(t *testing.T) {
	slowMigrations(t)
	vm := waitRunning(t, "linux-vm", 2*time.Minute)
	op := newEvict(t, "linux-vm")
	running := waitTransferring(t, op)
	pid := readPID(t, filepath.Join(runDirOf(t, running.Status.Migration.TargetPod), hypervisor.PIDFileName))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, reason := waitOpEnd(t, op, v1alpha2.OpFailed)
	t.Logf("failed with reason %s", reason)
	after := waitRunning(t, "linux-vm", time.Minute)
	if after.Status.NodeName != vm.Status.NodeName {
		t.Errorf("VM on %s, want it still on %s", after.Status.NodeName, vm.Status.NodeName)
	}
	if ms := after.Status.MigrationState; ms == nil || ms.Result != v1alpha2.MigrationFailed {
		t.Errorf("migrationState %+v, want result Failed", ms)
	}
	last := waitHeartbeat(t, "linux-vm", 0, time.Minute)
	waitHeartbeat(t, "linux-vm", last, time.Minute)
	assertOneQEMU(t, "linux-vm")
}

const pinnedVM = `
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualDisk
metadata:
  name: %[1]s-root
spec:
  dataSource:
    type: ObjectRef
    objectRef: {kind: ClusterVirtualImage, name: ferry-guest}
---
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachine
metadata:
  name: %[1]s
spec:
  cpu: {cores: 1}
  memory: {size: 128Mi}
  nodeSelector: {%[2]s}
  blockDeviceRefs:
    - {kind: VirtualDisk, name: %[1]s-root}
`

// TestNoNodeFits: a VM pinned to its node cannot move: the operation fails with
// TargetUnschedulable and the VM is untouched.
func TestNoNodeFits(t *testing.T) {
	setMigrationConfig(t, map[string]string{"migrationSchedulingTimeout": "5s"})
	t.Cleanup(func() { setMigrationConfig(t, nil) })
	apply(t, fmt.Sprintf(pinnedVM, "pinned", "kubernetes.io/hostname: node-1"))
	t.Cleanup(func() { deleteVM(t, "pinned") })
	vm := waitRunning(t, "pinned", 2*time.Minute)
	op := newEvict(t, "pinned")
	got, reason := waitOpEnd(t, op, v1alpha2.OpFailed)
	if reason != v1alpha2.ReasonTargetUnschedulable {
		t.Errorf("reason %s (%s), want %s", reason, got.Status.Progress, v1alpha2.ReasonTargetUnschedulable)
	}
	after := waitRunning(t, "pinned", time.Minute)
	if after.Status.NodeName != "node-1" || activePod(t, "pinned") != vm.Status.VirtualMachinePods[0].Name {
		t.Errorf("VM touched: node %s", after.Status.NodeName)
	}
}

// TestMigrationsQueueForSlots: two VMs on one node evicted at once: the node sends one at a
// time, the other waits with WaitingForSyncSlot, both end on other nodes.
func TestMigrationsQueueForSlots(t *testing.T) {
	apply(t, fmt.Sprintf(pinnedVM, "q1", ""))
	apply(t, fmt.Sprintf(pinnedVM, "q2", ""))
	t.Cleanup(func() { deleteVM(t, "q1"); deleteVM(t, "q2") })
	home := waitRunning(t, "q1", 2*time.Minute).Status.NodeName
	if waitRunning(t, "q2", 2*time.Minute).Status.NodeName != home {
		mustFerry(t, "v", "migrate", "q2", "--target-node", home, "--wait", "--timeout", "3m")
	}
	setMigrationConfig(t, map[string]string{"migrationBandwidth": "16Mi"})
	t.Cleanup(func() { setMigrationConfig(t, nil) })
	a, b := newEvict(t, "q1"), newEvict(t, "q2")
	sawWaiting := false
	eventually(t, 3*time.Minute, "both migrations done", func() (bool, string) {
		x, y := getOp(t, a), getOp(t, b)
		for _, o := range []*v1alpha2.VirtualMachineOperation{x, y} {
			if c := meta.FindStatusCondition(o.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil && c.Reason == v1alpha2.ReasonWaitingForSyncSlot {
				sawWaiting = true
			}
		}
		return x.Status.Phase == v1alpha2.OpCompleted && y.Status.Phase == v1alpha2.OpCompleted, fmt.Sprintf("%s/%s", x.Status.Phase, y.Status.Phase)
	})
	if !sawWaiting {
		t.Errorf("no operation waited with %s", v1alpha2.ReasonWaitingForSyncSlot)
	}
	for _, vm := range []string{"q1", "q2"} {
		if n := waitRunning(t, vm, time.Minute).Status.NodeName; n == home {
			t.Errorf("%s still on %s", vm, home)
		}
	}
}

func deleteVM(t *testing.T, name string) {
	_, _ = ferry(t, "k", "delete", "vm", name, "--wait=true", "--timeout=2m", "--ignore-not-found")
	_, _ = ferry(t, "k", "delete", "vd", name+"-root", "--wait=true", "--timeout=1m", "--ignore-not-found")
}
