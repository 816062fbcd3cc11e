package controller_test

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/cli"
)

// ferryV runs `ferry v ARGS...` against the test's apiserver, as a user would, with a
// kubeconfig whose context has no namespace.
func ferryV(t *testing.T, args ...string) error {
	t.Helper()
	kc := adminKubeconfig(t)
	cmd := cli.NewCommand(func() string { return kc })
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	return cmd.ExecuteContext(ctx)
}

// placementNodes makes Ready nodes, labelled as kubelets label theirs, for a VM whose
// nodeSelector is newVM's plus zone; it returns their names: a and b in zone "a", c in
// zone "a" but cordoned, d in zone "b".
func placementNodes(t *testing.T, ns string) (a, b, c, d string) {
	t.Helper()
	names := []string{"tn-a-" + ns, "tn-b-" + ns, "tn-c-" + ns, "tn-d-" + ns}
	for i, name := range names {
		zone := "a"
		if i == 3 {
			zone = "b"
		}
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			corev1.LabelHostname: name, corev1.LabelOSStable: "linux", "ferry-test/zone": ns + "-" + zone,
		}}, Spec: corev1.NodeSpec{Unschedulable: i == 2}}
		if err := k8s.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(ctx, node) })
		node.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi")}
		node.Status.Capacity = node.Status.Allocatable
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		if err := k8s.Status().Update(ctx, node); err != nil {
			t.Fatal(err)
		}
		// The apiserver taints a new node not-ready (TaintNodesByCondition); the node
		// lifecycle controller, which envtest lacks, lifts it once the node is Ready.
		node.Spec.Taints = nil
		if err := k8s.Update(ctx, node); err != nil {
			t.Fatal(err)
		}
	}
	return names[0], names[1], names[2], names[3]
}

// operationsOf lists the operations of VM vm.
func operationsOf(t *testing.T, ns, vm string) []v1alpha2.VirtualMachineOperation {
	t.Helper()
	var ops v1alpha2.VirtualMachineOperationList
	if err := k8s.List(ctx, &ops, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []v1alpha2.VirtualMachineOperation
	for _, op := range ops.Items {
		if op.Spec.VirtualMachineName == vm {
			out = append(out, op)
		}
	}
	return out
}

// newOperations returns a function that gives the one operation of vm made since it
// last looked.
func newOperations(t *testing.T, ns, vm string) func() *v1alpha2.VirtualMachineOperation {
	seen := map[string]bool{}
	return func() *v1alpha2.VirtualMachineOperation {
		t.Helper()
		var fresh []v1alpha2.VirtualMachineOperation
		for _, op := range operationsOf(t, ns, vm) {
			if !seen[op.Name] {
				seen[op.Name] = true
				fresh = append(fresh, op)
			}
		}
		if len(fresh) != 1 {
			t.Fatalf("%d new operations of %s, want 1", len(fresh), vm)
		}
		return &fresh[0]
	}
}

// TestMigrateToTargetNodeName: `ferry v migrate VM.NS --target-node-name NODE` moves the VM
// to that node; a node that is cordoned, outside the VM's placement or missing, or the
// VM's own node, is refused with a reason, and the VM keeps running where it was. The
// operation's status reads as Deckhouse's: reasons, and a Progress in percent.
func TestMigrateToTargetNodeName(t *testing.T) {
	ns := newNamespace(t)
	a, b, cordoned, otherZone := placementNodes(t, ns)
	makeImageDisk(t, ns, "d")
	vm := newVM(ns, "m", "d", v1alpha2.AlwaysOn)
	vm.Spec.NodeSelector["ferry-test/zone"] = ns + "-a"
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	source := waitPod(t, ns, "m")
	runPod(t, &source, a)
	waitPhase(t, ns, "m", v1alpha2.MachineRunning)
	ref := "m." + ns
	newOp := newOperations(t, ns, "m")

	// Refused by the CLI before any operation is made, as d8 refuses them.
	for _, tc := range []struct{ node, says string }{{a, "already runs on node " + a}, {"no-such-node", "there is no node no-such-node"}, {"", "cannot be empty"}} {
		if err := ferryV(t, "migrate", ref, "--target-node-name", tc.node); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("migrate --target-node-name %q: %v; want an error saying %q", tc.node, err, tc.says)
		}
	}
	if ops := operationsOf(t, ns, "m"); len(ops) != 0 {
		t.Fatalf("refused command lines made %d operations", len(ops))
	}

	// Refused by the controller, at once, with the reason.
	for _, tc := range []struct {
		node string
		why  []string
	}{
		{cordoned, []string{"node " + cordoned + " cordoned"}},
		{otherZone, []string{"node " + otherZone + " does not match the VM's nodeSelector/affinity"}},
	} {
		if err := ferryV(t, "migrate", ref, "--target-node-name", tc.node); err != nil {
			t.Fatalf("migrate --target-node-name %s: %v", tc.node, err)
		}
		op := newOp()
		waitOp(t, op, v1alpha2.OpFailed, v1alpha2.ReasonTargetUnschedulable)
		_, msg := op.Outcome()
		for _, w := range append(tc.why, "kubernetes.io/hostname="+tc.node) {
			if !strings.Contains(msg, w) {
				t.Errorf("refused migration to %s: message %q does not say %q", tc.node, msg, w)
			}
		}
		if op.Status.Progress != "2%" {
			t.Errorf("refused migration to %s: progress %q, want 2%% (TargetUnschedulable, as Deckhouse)", tc.node, op.Status.Progress)
		}
	}
	// Written as a user would with kubectl, past the CLI's checks: the VM's own node.
	own := &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{Name: "to-own-node", Namespace: ns},
		Spec: v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpMigrate, VirtualMachineName: "m",
			Migrate: &v1alpha2.MigrateSpec{NodeSelector: map[string]string{corev1.LabelHostname: a}}},
	}
	if err := k8s.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	newOp()
	waitOp(t, own, v1alpha2.OpFailed, v1alpha2.ReasonTargetUnschedulable)
	if _, msg := own.Outcome(); !strings.Contains(msg, "already runs on node "+a) {
		t.Errorf("migration to the VM's own node: %q", msg)
	}
	if pods := livePods(t, ns, "m"); len(pods) != 1 || pods[0].Name != source.Name {
		t.Fatalf("after refused migrations: %d pods, want only the source %s", len(pods), source.Name)
	}
	if v := getVM(t, ns, "m"); v.Status.Phase != v1alpha2.MachineRunning || v.Status.NodeName != a {
		t.Fatalf("after refused migrations the VM is %s on %s, want Running on %s", v.Status.Phase, v.Status.NodeName, a)
	}

	// A node that fits: the target pod is made for it, and the VM ends there.
	if err := ferryV(t, "migrate", ref, "--target-node-name", b); err != nil {
		t.Fatal(err)
	}
	op := newOp()
	var target corev1.Pod
	eventually(t, timeout, "a target pod for node "+b, func() (bool, string) {
		for _, p := range livePods(t, ns, "m") {
			if _, ok := p.Labels[v1alpha2.LabelMigrationTarget]; ok {
				target = p
				return true, ""
			}
		}
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(op), op)
		return false, opText(op)
	})
	if got := target.Spec.NodeSelector[corev1.LabelHostname]; got != b || target.Spec.NodeSelector["ferry-test/zone"] != ns+"-a" {
		t.Fatalf("target pod's nodeSelector %v: want %s=%s on top of the VM's own", target.Spec.NodeSelector, corev1.LabelHostname, b)
	}
	waitOp(t, op, v1alpha2.OpInProgress, v1alpha2.ReasonTargetScheduling)
	progress := op.Status.Progress
	if progress != "2%" {
		t.Errorf("scheduling the target: progress %q, want 2%%", progress)
	}
	migrateThrough(t, op, &source, &target, b)
	if v := waitPhase(t, ns, "m", v1alpha2.MachineRunning); v.Status.NodeName != b {
		t.Errorf("the VM runs on %s, want %s", v.Status.NodeName, b)
	}
}

// migrateThrough plays the scheduler and the nodes' agents through a migration to node,
// with the source reporting QEMU's progress, and checks what the operation shows at each
// step: Deckhouse's reasons, and a progress that only grows.
func migrateThrough(t *testing.T, op *v1alpha2.VirtualMachineOperation, source, target *corev1.Pod, node string) {
	t.Helper()
	last := 0
	step := func(what, reason string, ok func(p int) bool) {
		t.Helper()
		eventually(t, timeout, what, func() (bool, string) {
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
				return false, err.Error()
			}
			if op.Status.Phase == v1alpha2.OpFailed {
				t.Fatalf("%s: the operation failed: %s", what, opText(op))
			}
			r, _ := op.Outcome()
			var p int
			_, err := fmt.Sscanf(op.Status.Progress, "%d%%", &p)
			return err == nil && r == reason && ok(p), opText(op)
		})
		p := 0
		fmt.Sscanf(op.Status.Progress, "%d%%", &p)
		if p < last {
			t.Errorf("%s: progress went back from %d%% to %d%%", what, last, p)
		}
		last = p
		t.Logf("%s: %s", what, opText(op))
	}
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: target.Name, Namespace: target.Namespace}, Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	if err := k8s.SubResource("binding").Create(ctx, target, b); err != nil {
		t.Fatal(err)
	}
	step("target preparing", v1alpha2.ReasonTargetPreparing, func(p int) bool { return p == 3 })
	setPodStatus(t, target, corev1.PodRunning, false)
	const uri = "tcp:10.0.0.2:4444"
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"`+v1alpha2.AnnotationIncomingURI+`":"`+uri+`"}}}`))
	if err := k8s.Patch(ctx, target, patch); err != nil {
		t.Fatal(err)
	}
	step("transfer started", v1alpha2.ReasonSyncing, func(p int) bool { return p >= 10 })
	report := func(p v1alpha2.MigrationProgress) {
		t.Helper()
		p.URI = uri
		b, _ := json.Marshal(p)
		ann, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{v1alpha2.AnnotationMigrationStatus: string(b)}}})
		if err := k8s.Patch(ctx, source, client.RawPatch("application/merge-patch+json", ann)); err != nil {
			t.Fatal(err)
		}
	}
	const gib = 1 << 30
	// Half of memory sent in the first pass: in the bulk stage, 10-45%.
	report(v1alpha2.MigrationProgress{Status: "active", TotalBytes: gib, RemainingBytes: gib / 2, TransferredBytes: gib / 2, DirtySyncCount: 1, TotalTimeMs: 1000})
	step("first pass half done", v1alpha2.ReasonSyncing, func(p int) bool { return p > 10 && p <= 45 })
	bulk := last
	// Later passes, little left: the iterative stage, up to 90%.
	report(v1alpha2.MigrationProgress{Status: "active", TotalBytes: gib, RemainingBytes: 60 << 20, TransferredBytes: gib + 300<<20, DirtySyncCount: 4, TotalTimeMs: 3000})
	step("iterating", v1alpha2.ReasonSyncing, func(p int) bool { return p > bulk && p <= 90 })
	// Memory across, the guest not yet seen on the target: the source is suspended.
	report(v1alpha2.MigrationProgress{Status: "completed", TotalBytes: gib, TransferredBytes: gib + 400<<20, DowntimeMs: 42, TotalTimeMs: 4000})
	step("source suspended", v1alpha2.ReasonSourceSuspended, func(p int) bool { return p == 91 })
	setPodStatus(t, target, corev1.PodRunning, true)
	if err := k8s.Delete(ctx, source, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "the operation Completed", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return false, err.Error()
		}
		return op.Status.Phase == v1alpha2.OpCompleted, opText(op)
	})
	if r, msg := op.Outcome(); r != v1alpha2.ReasonMigrationCompleted || op.Status.Progress != "100%" || !strings.Contains(msg, "downtime 42 ms") {
		t.Errorf("completed migration: %s", opText(op))
	}
	if ms := op.Status.Migration; ms == nil || ms.TargetNode != node || ms.DowntimeMs != 42 {
		t.Errorf("status.migration %+v: want target node %s and the downtime QEMU measured", ms, node)
	}
}

// adminKubeconfig writes a kubeconfig for the test's apiserver as its admin, with a
// context that names no namespace, and returns its path.
func adminKubeconfig(t *testing.T) string {
	t.Helper()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: restCfg.Host, CertificateAuthorityData: restCfg.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: restCfg.CertData, ClientKeyData: restCfg.KeyData, Token: restCfg.BearerToken}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	cfg.CurrentContext = "envtest"
	if err := clientcmd.WriteToFile(*cfg, kc); err != nil {
		t.Fatal(err)
	}
	return kc
}
