package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// fakeLauncher is what the handler's probe, migrate and final-migration calls reach.
type fakeLauncher struct {
	mu       sync.Mutex
	guest    GuestState
	migrated []v1alpha2.MigrationRequest
	final    *v1alpha2.MigrationProgress
	dirs     map[string]bool
}

func (f *fakeLauncher) probe(_ context.Context, dir string) (GuestState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dirs[dir] = true
	return f.guest, nil
}

func (f *fakeLauncher) set(g GuestState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.guest = g
}

// TestHandlerBesideARealKubelet runs the VM handler alone (RoleHandler) on a pod that a
// kubelet (the test) runs: it renews the agent's Lease in ferry-node-lease, finds the
// launcher's run directory by the pod's UID, sets the guest-ready gate from the heartbeat,
// relays a migration, and reads the end of a migrated launcher from its exit code. It
// never does the kubelet's part: no Node or pod status written but the gate, no pod run or
// deleted.
func TestHandlerBesideARealKubelet(t *testing.T) {
	const node = "n1"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "virt-launcher-vm-abc", UID: "0d4c1c5e-uid",
			Labels: map[string]string{v1alpha2.LabelLauncher: "virt-launcher", v1alpha2.LabelVMName: "vm"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "compute", Command: []string{"ferry"}}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: v1alpha2.PodConditionGuestReady}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "compute", ContainerID: "containerd://c1",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		}}},
	}
	target := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.2"}}}}
	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, UID: "node-uid"}}, target, pod)
	fl := &fakeLauncher{dirs: map[string]bool{}}
	state := t.TempDir()
	k := New(cs, Options{
		Role: RoleHandler, NodeName: node, NodeIP: "127.0.0.1", StateDir: state,
		LeaseInterval: 50 * time.Millisecond, Probe: fl.probe, Log: logr.Discard(),
		Migrate: func(_ context.Context, dir string, r v1alpha2.MigrationRequest) error {
			fl.mu.Lock()
			defer fl.mu.Unlock()
			fl.migrated = append(fl.migrated, r)
			return nil
		},
		FinalMigration: func(string) (*v1alpha2.MigrationProgress, error) {
			fl.mu.Lock()
			defer fl.mu.Unlock()
			if fl.final == nil {
				return nil, fmt.Errorf("none")
			}
			return fl.final, nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func() *corev1.Pod {
		p, err := cs.CoreV1().Pods("vms").Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	waitFor := func(what string, cond func() (bool, string)) {
		t.Helper()
		var seen string
		if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			ok, s := cond()
			seen = s
			return ok, nil
		}); err != nil {
			t.Fatalf("%s: not within 10s; last seen %s", what, seen)
		}
	}
	gate := func(want corev1.ConditionStatus, reason string) func() (bool, string) {
		return func() (bool, string) {
			c := podCondition(&get().Status, v1alpha2.PodConditionGuestReady)
			return c != nil && c.Status == want && c.Reason == reason, fmt.Sprintf("%+v", c)
		}
	}

	waitFor("the agent's Lease in "+v1alpha2.FencingLeaseNamespace, func() (bool, string) {
		l, err := cs.CoordinationV1().Leases(v1alpha2.FencingLeaseNamespace).Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		owned := len(l.OwnerReferences) == 1 && l.OwnerReferences[0].UID == "node-uid"
		return l.Spec.RenewTime != nil && owned, fmt.Sprintf("%+v", l)
	})
	runDir := filepath.Join(state, "pods", string(pod.UID))
	waitFor("the run directory on the pod", func() (bool, string) {
		a := get().Annotations[AnnotationRunDir]
		return a == runDir, a
	})
	waitFor("the gate False before QEMU runs", gate(corev1.ConditionFalse, v1alpha2.ReasonGuestNotRunning))
	fl.set(GuestState{QEMU: "running"})
	waitFor("the gate True once QEMU runs the guest", gate(corev1.ConditionTrue, v1alpha2.ReasonGuestRunning))
	agent := func(want corev1.ConditionStatus, msg string) func() (bool, string) {
		return func() (bool, string) {
			c := podCondition(&get().Status, v1alpha2.PodConditionGuestAgent)
			return c != nil && c.Status == want && strings.Contains(c.Message, msg), fmt.Sprintf("%+v", c)
		}
	}
	waitFor("the guest-agent condition False while no agent answers", agent(corev1.ConditionFalse, "does not answer"))
	fl.set(GuestState{QEMU: "running", Agent: &v1alpha2.GuestAgentReport{OS: &v1alpha2.GuestOSInfo{ID: "debian", VersionID: "12"}, Hostname: "vm-1"}})
	waitFor("the guest-agent condition True with the agent's report", agent(corev1.ConditionTrue, `"versionId":"12"`))
	fl.set(GuestState{QEMU: "guest-panicked", Fault: &GuestFault{Reason: v1alpha2.ReasonGuestPanicked, Message: "the guest's kernel panicked"}})
	waitFor("the gate False with the panic as evidence", gate(corev1.ConditionFalse, v1alpha2.ReasonGuestPanicked))
	fl.set(GuestState{QEMU: "running"})
	waitFor("the gate True again", gate(corev1.ConditionTrue, v1alpha2.ReasonGuestRunning))
	fl.mu.Lock()
	probed := fl.dirs[runDir]
	fl.mu.Unlock()
	if !probed {
		t.Errorf("the launcher was not asked in %s", runDir)
	}

	// The migration controller asks for a migration; the launcher migrates away and exits 3.
	req := v1alpha2.MigrationRequest{URI: "tcp:10.0.0.2:49152", TargetNode: "n2"}
	raw, _ := json.Marshal(req)
	p := get()
	p.Annotations[v1alpha2.AnnotationMigrateTo] = string(raw)
	if _, err := cs.CoreV1().Pods("vms").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the migration started", func() (bool, string) {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		return len(fl.migrated) == 1 && fl.migrated[0].URI == req.URI, fmt.Sprintf("%+v", fl.migrated)
	})
	fl.mu.Lock()
	fl.final = &v1alpha2.MigrationProgress{URI: req.URI, Status: "completed", TotalTimeMs: 800}
	fl.mu.Unlock()
	p = get()
	p.Status.Phase = corev1.PodFailed
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: v1alpha2.LauncherExitMigrated, Reason: "Error"}}
	if _, err := cs.CoreV1().Pods("vms").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the migration's end reported", func() (bool, string) {
		var m v1alpha2.MigrationProgress
		a := get().Annotations[v1alpha2.AnnotationMigrationStatus]
		_ = json.Unmarshal([]byte(a), &m)
		return m.Status == "completed" && m.URI == req.URI, a
	})

	// The kubelet's part is left alone.
	for _, a := range cs.Actions() {
		verb, res, sub := a.GetVerb(), a.GetResource().Resource, a.GetSubresource()
		switch {
		case res == "nodes" && verb != "get" && verb != "list" && verb != "watch",
			res == "pods" && (verb == "create" || verb == "delete"),
			res == "pods" && sub == "status" && verb != "patch" && !isTestWrite(a),
			res == "leases" && a.GetNamespace() == corev1.NamespaceNodeLease:
			t.Errorf("the handler did the kubelet's part: %s %s/%s in %q", verb, res, sub, a.GetNamespace())
		}
	}
}

// isTestWrite tells the test's own UpdateStatus (the kubelet's, played here) apart.
func isTestWrite(a k8stesting.Action) bool {
	u, ok := a.(k8stesting.UpdateAction)
	if !ok {
		return false
	}
	p, ok := u.GetObject().(*corev1.Pod)
	return ok && p.Status.Phase == corev1.PodFailed
}
