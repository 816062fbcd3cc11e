package controller_test

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func newOp(ns, name, vm string, t v1alpha2.OperationType) *v1alpha2.VirtualMachineOperation {
	return &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1alpha2.VirtualMachineOperationSpec{Type: t, VirtualMachineName: vm},
	}
}

// opText is an operation's status in a line, for failure messages.
func opText(op *v1alpha2.VirtualMachineOperation) string {
	reason, msg := op.Outcome()
	return fmt.Sprintf("%s %q %s: %s", op.Status.Phase, op.Status.Progress, reason, msg)
}

func waitOp(t *testing.T, op *v1alpha2.VirtualMachineOperation, phase v1alpha2.OperationPhase, reason string) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("vmop %s %s/%s", op.Name, phase, reason), func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted)
		if c == nil {
			return false, "no condition"
		}
		return op.Status.Phase == phase && c.Reason == reason, fmt.Sprintf("%s %s: %s", op.Status.Phase, c.Reason, c.Message)
	})
}

// TestOperationsThatCannotApply end Failed with a reason and leave the VM alone.
func TestOperationsThatCannotApply(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newVM(ns, "always", "root", v1alpha2.AlwaysOn)); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "always")
	runPod(t, &pod, "node-a")
	waitPhase(t, ns, "always", v1alpha2.MachineRunning)

	missing := newOp(ns, "ghost", "no-such-vm", v1alpha2.OpStart)
	stop := newOp(ns, "stop-always", "always", v1alpha2.OpStop)
	for _, op := range []*v1alpha2.VirtualMachineOperation{missing, stop} {
		if err := k8s.Create(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	waitOp(t, missing, v1alpha2.OpFailed, v1alpha2.ReasonVMNotFound)
	waitOp(t, stop, v1alpha2.OpFailed, v1alpha2.ReasonNotApplicable)
	if _, msg := stop.Outcome(); !strings.Contains(msg, "AlwaysOn") {
		t.Errorf("message does not say why: %q", msg)
	}
	// Refused before anything was sent to the VM: no SignalSent, and no progress (which
	// Deckhouse reports for migrations only).
	if c := meta.FindStatusCondition(stop.Status.Conditions, v1alpha2.OpConditionSignalSent); c != nil || stop.Status.Progress != "" {
		t.Errorf("refused stop: SignalSent %+v, progress %q", c, stop.Status.Progress)
	}
	if vm := getVM(t, ns, "always"); vm.Status.Phase != v1alpha2.MachineRunning {
		t.Errorf("VM %s after a refused stop", vm.Status.Phase)
	}
}

// TestStopAndRestart: Stop ends the VM's pod and keeps it off; Restart replaces the pod.
func TestStopAndRestart(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newVM(ns, "vm", "root", "")); err != nil {
		t.Fatal(err)
	}
	first := waitPod(t, ns, "vm")
	runPod(t, &first, "node-a")
	waitPhase(t, ns, "vm", v1alpha2.MachineRunning)

	restart := newOp(ns, "restart", "vm", v1alpha2.OpRestart)
	if err := k8s.Create(ctx, restart); err != nil {
		t.Fatal(err)
	}
	// The old pod is told to go and stays until the kubelet says it is gone: the restart
	// is under way, in Deckhouse's words.
	waitOp(t, restart, v1alpha2.OpInProgress, v1alpha2.ReasonRestartInProgress)
	if c := meta.FindStatusCondition(restart.Status.Conditions, v1alpha2.OpConditionSignalSent); c == nil || c.Status != metav1.ConditionTrue || c.Reason != v1alpha2.ReasonSignalSentSuccess {
		t.Errorf("restart under way: SignalSent %+v", c)
	}
	finishDeletion(t, &first)
	second := waitPod(t, ns, "vm")
	if second.Name == first.Name {
		t.Fatal("restart kept the old pod")
	}
	runPod(t, &second, "node-b")
	waitOp(t, restart, v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted)

	stop := newOp(ns, "stop", "vm", v1alpha2.OpStop)
	if err := k8s.Create(ctx, stop); err != nil {
		t.Fatal(err)
	}
	finishDeletion(t, &second)
	waitOp(t, stop, v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted)
	if vm := getVM(t, ns, "vm"); vm.Status.Phase != v1alpha2.MachineStopped {
		t.Errorf("phase %s after stop", vm.Status.Phase)
	}
	if n := len(livePods(t, ns, "vm")); n != 0 {
		t.Errorf("%d pods after stop", n)
	}
}

// finishDeletion plays the kubelet: once the pod is marked for deletion, remove it.
func finishDeletion(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	eventually(t, timeout, "pod "+pod.Name+" marked for deletion", func() (bool, string) {
		err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return err == nil && pod.DeletionTimestamp != nil, fmt.Sprint(err)
	})
	if err := k8s.Delete(ctx, pod, client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
}

// TestInvalidInputIsRefused: the apiserver refuses bad specs with a message that says
// what to fix.
func TestInvalidInputIsRefused(t *testing.T) {
	ns := newNamespace(t)
	vm := func(mut func(*v1alpha2.VirtualMachine)) client.Object {
		v := newVM(ns, "bad", "root", "")
		mut(v)
		return v
	}
	tests := []struct {
		name string
		obj  client.Object
		want string
	}{
		{"tiny memory", vm(func(v *v1alpha2.VirtualMachine) { v.Spec.Memory.Size = resource.MustParse("64Mi") }), "at least 96Mi"},
		{"unknown runPolicy", vm(func(v *v1alpha2.VirtualMachine) { v.Spec.RunPolicy = "Sometimes" }), "AlwaysOnUnlessStoppedManually"},
		{"unknown migration policy", vm(func(v *v1alpha2.VirtualMachine) { v.Spec.LiveMigrationPolicy = "Never" }), "PreferSafe"},
		{"no disks", vm(func(v *v1alpha2.VirtualMachine) { v.Spec.BlockDeviceRefs = nil }), "blockDeviceRefs"},
		{"same disk twice", vm(func(v *v1alpha2.VirtualMachine) {
			v.Spec.BlockDeviceRefs = append(v.Spec.BlockDeviceRefs, v.Spec.BlockDeviceRefs[0])
		}), "must not name the same device twice"},
		{"zero cores", vm(func(v *v1alpha2.VirtualMachine) { v.Spec.CPU.Cores = 0 }), "cores"},
		{"bad address", vm(func(v *v1alpha2.VirtualMachine) { v.Spec.VirtualMachineIPAddress = "10.66.10" }), "must be an IPv4 address"},
		{"bad op type", &v1alpha2.VirtualMachineOperation{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: ns},
			Spec: v1alpha2.VirtualMachineOperationSpec{Type: "Teleport", VirtualMachineName: "vm"}}, "Evict"},
		{"migrate on a stop", &v1alpha2.VirtualMachineOperation{ObjectMeta: metav1.ObjectMeta{Name: "y", Namespace: ns},
			Spec: v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpStop, VirtualMachineName: "vm", Migrate: &v1alpha2.MigrateSpec{}}}, "only allowed with type Migrate"},
		{"image without url", &v1alpha2.ClusterVirtualImage{ObjectMeta: metav1.ObjectMeta{Name: ns + "-nourl"},
			Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceHTTP}}}, "dataSource.http is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(ctx, tc.obj)
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestOperationSpecIsImmutable: an operation cannot be changed once created.
func TestOperationSpecIsImmutable(t *testing.T) {
	ns := newNamespace(t)
	op := newOp(ns, "op", "vm", v1alpha2.OpStart)
	if err := k8s.Create(ctx, op); err != nil {
		t.Fatal(err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return err
		}
		op.Spec.VirtualMachineName = "other"
		return k8s.Update(ctx, op)
	})
	if err == nil || !strings.Contains(err.Error(), "spec is immutable") {
		t.Fatalf("update of spec: %v", err)
	}
}
