package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/simnode"
)

// The cluster of TestFlowsOnOwnTokensAndLeaderKill: ferry up's embedded control plane
// (apiserver, etcd, scheduler, controller manager) on this port, without its controller and
// its webhooks. Ports port+2000..port+2003 follow from it (the replicas' webhooks are behind
// port+2002, where ferry up's controller would serve them).
const flowsPort = 19643

// TestFlowsOnOwnTokensAndLeaderKill installs deploy/base's ServiceAccounts, roles and node
// policies on the embedded control plane and runs two replicas of `ferry controller` with
// leader election on the controller's token, and simulated nodes split as on a real
// cluster: a stand-in kubelet (agent --role kubelet, on the admin's credentials, as a
// kubelet has its node's) runs the launcher pods, and the agent as the DaemonSet runs it
// (--role handler) on a token bound to that node's agent Pod handles fencing and the VMs.
// Then, with those permissions only:
//   - a VirtualMachineOperation Evict moves a VM to another node, same address;
//   - `kubectl drain --pod-selector` moves a VM off its node;
//   - the leader is killed (SIGKILL) while a migration transfers: the other replica takes
//     over, the migration completes and the VM runs once;
//   - a node loses power and the leader is killed once Ferry has seen the node unreachable:
//     the other replica fences the node and starts the VM on another node, once.
//
// No simulated guest ever runs in two places (the simulated nodes record every guest), and
// no component was refused a request (their logs have no "forbidden").
func TestFlowsOnOwnTokensAndLeaderKill(t *testing.T) {
	bin := ferryBin(t)
	ctx := context.Background()
	dir := t.TempDir()
	f := &flows{t: t, bin: bin, dir: dir, upDir: filepath.Join(dir, "up")}

	// The embedded control plane, without Ferry's controller.
	f.start("up", "--state-dir", f.upDir, "up", "--nodes", "0", "--netns=false", "--sample-vm=false", "--no-controller",
		"--port", strconv.Itoa(flowsPort), "--ip-range", "10.81.0.0/24", "--fencing-profile", "Fast")
	f.connect()
	eventually(t, 30*time.Second, "ferry up's webhook certificate", func() (bool, string) {
		_, err := os.Stat(filepath.Join(f.upDir, "control-plane", "pki", "webhook.key"))
		return err == nil, fmt.Sprint(err)
	})
	// With --no-controller, ferry up registers no webhook of its own: deploy/base's have
	// the same names. It has by the time its NodeGroup exists (created after them).
	eventually(t, 30*time.Second, "ferry up's NodeGroup", func() (bool, string) {
		err := f.admin.Get(ctx, client.ObjectKey{Name: "worker"}, &deckhousev1.NodeGroup{})
		return err == nil, fmt.Sprint(err)
	})
	var hooks admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := f.admin.List(ctx, &hooks); err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks.Items {
		t.Errorf("ferry up --no-controller registered the webhook configuration %s (labels %v)", h.Name, h.Labels)
	}
	var mutating admissionregistrationv1.MutatingWebhookConfigurationList
	if err := f.admin.List(ctx, &mutating); err != nil {
		t.Fatal(err)
	}
	for _, h := range mutating.Items {
		t.Errorf("ferry up --no-controller registered the mutating webhook configuration %s (labels %v)", h.Name, h.Labels)
	}

	// deploy/base's permissions and node policies.
	for _, n := range []string{namespace, v1alpha2.FencingLeaseNamespace} {
		if err := f.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	for _, u := range manifests(t) {
		if !installKinds[u.GetKind()] {
			continue
		}
		if err := f.admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), fieldOwner, client.ForceOwnership); err != nil {
			t.Fatalf("%s: %v", describe(u), err)
		}
	}

	// The agents' tokens, each bound to its node's agent Pod, and the controller's.
	nodes := []string{"ha-001", "ha-002", "ha-003", "ha-004"}
	kcDir := filepath.Join(dir, "kubeconfigs")
	for _, n := range nodes {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "ferry-agent-" + n},
			Spec: corev1.PodSpec{NodeName: n, ServiceAccountName: "ferry-agent",
				Containers: []corev1.Container{{Name: "agent", Image: "ferryvm/ferry:test"}}},
		}
		if err := f.admin.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		writeKubeconfig(t, filepath.Join(kcDir, n+".kubeconfig"), f.adminCfg, f.token("ferry-agent", pod))
	}
	ctrlKC := filepath.Join(kcDir, "controller.kubeconfig")
	writeKubeconfig(t, ctrlKC, f.adminCfg, f.token("ferry-controller", nil))

	// Simulated nodes, their agents on their own tokens; a migration takes 6 s, time to kill
	// a leader in.
	// A short directory: launcher sockets live under it (at most 107 bytes a path).
	simDir, err := os.MkdirTemp("", "fl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(simDir) })
	f.simDir = simDir
	f.start("nodes", "sim-nodes", "--split-agent", "--kubeconfig", filepath.Join(f.upDir, "control-plane", "admin.kubeconfig"),
		"--kubeconfig-dir", kcDir, "--count", strconv.Itoa(len(nodes)),
		"--prefix", "ha", "--state-dir", simDir, "--control", "127.0.0.1:0", "--migration-time", "6s", "--cpu", "4", "--memory", "8Gi")

	// Two controller replicas on the controller's token. Both serve the webhooks, with the
	// certificate ferry up issued (for 127.0.0.1, from the cluster's CA), behind one address
	// (port+2002), as a Service would: a connection goes to a replica that answers.
	// deploy/base's webhook configurations call that address by URL: nothing routes
	// Services to processes here.
	pki := filepath.Join(f.upDir, "control-plane", "pki")
	service := startWebhookProxy(t, fmt.Sprintf("127.0.0.1:%d", flowsPort+2002))
	f.registerWebhooks(service.port())
	for i := range 2 {
		service.add(flowsPort + 2020 + i)
		args := []string{"controller", "--kubeconfig", ctrlKC, "--leader-elect", "--leader-election-namespace", namespace,
			"--storage-dir", filepath.Join(f.upDir, "storage"), "--ip-range", "10.81.0.0/24", "--vm-network", "none",
			"--image-source-dirs", dir, // the test's image files
			"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", flowsPort+2010+2*i),
			"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", flowsPort+2011+2*i),
			"--webhook-host", "127.0.0.1", "--webhook-port", strconv.Itoa(flowsPort + 2020 + i),
			"--webhook-cert-dir", pki, "--webhook-cert-name", "webhook.crt", "--webhook-key-name", "webhook.key"}
		f.replicas = append(f.replicas, args)
		f.start(fmt.Sprintf("controller-%d", i), args...)
	}
	f.waitNodesReady(nodes)
	leader := f.leader()
	t.Logf("controller-%d leads", leader)

	// Two AlwaysOn VMs booting a shared image (the simulated nodes boot no guest from it).
	img := filepath.Join(dir, "image.raw")
	raw := make([]byte, 1<<20)
	raw[510], raw[511] = 0x55, 0xAA // a boot sector, which the image import checks for
	if err := os.WriteFile(img, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	ns := "flows"
	if err := f.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	if err := f.admin.Create(ctx, &v1alpha2.ClusterVirtualImage{
		ObjectMeta: metav1.ObjectMeta{Name: "flows-image"},
		Spec:       v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: "file://" + img}}},
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vm-a", "vm-b"} {
		eventually(t, 60*time.Second, "creating VM "+name+" (its webhook answers)", func() (bool, string) {
			err := f.admin.Create(ctx, &v1alpha2.VirtualMachine{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: v1alpha2.VirtualMachineSpec{
					RunPolicy:       v1alpha2.AlwaysOn,
					CPU:             v1alpha2.CPUSpec{Cores: 1, CoreFraction: "10%"},
					Memory:          v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
					BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.ClusterImageDevice, Name: "flows-image"}},
				},
			})
			return client.IgnoreAlreadyExists(err) == nil, fmt.Sprint(err)
		})
	}
	a := f.waitRunning(ns, "vm-a", "")
	b := f.waitRunning(ns, "vm-b", "")

	// 1. Live migration by a VirtualMachineOperation.
	op := f.evict(ns, "vm-a")
	f.waitOp(op, v1alpha2.OpCompleted)
	a = f.waitMoved(ns, "vm-a", a)
	t.Logf("Evict: vm-a moved to %s, address %s", a.Status.NodeName, a.Status.IPAddress)

	// 2. Maintenance: kubectl drain evicts the VM's launcher pod; Ferry moves the VM instead.
	drained := b.Status.NodeName
	out, err := exec.Command(bin, "--state-dir", f.upDir, "k", "drain", drained, "--pod-selector", "vm.kubevirt.internal.virtualization.deckhouse.io/name",
		"--delete-emptydir-data", "--timeout", "3m").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl drain %s: %v\n%s", drained, err, out)
	}
	b = f.waitMoved(ns, "vm-b", b)
	t.Logf("drain %s: vm-b moved to %s, address %s", drained, b.Status.NodeName, b.Status.IPAddress)
	if out, err := exec.Command(bin, "--state-dir", f.upDir, "k", "uncordon", drained).CombinedOutput(); err != nil {
		t.Fatalf("kubectl uncordon: %v\n%s", err, out)
	}

	// 3. The leader dies while a migration transfers.
	op = f.evict(ns, "vm-a")
	eventually(t, 60*time.Second, "the migration transferring", func() (bool, string) {
		if err := f.admin.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return false, err.Error()
		}
		ms := op.Status.Migration
		if op.Finished() {
			t.Fatalf("the operation ended before the leader could be killed: %s %s", op.Status.Phase, op.Status.Progress)
		}
		return ms != nil && ms.Phase == v1alpha2.MigrationTransferring, fmt.Sprintf("%s %+v", op.Status.Phase, ms)
	})
	f.killLeader()
	f.waitOp(op, v1alpha2.OpCompleted)
	a = f.waitMoved(ns, "vm-a", a)
	t.Logf("leader killed mid-migration: vm-a on %s, address %s", a.Status.NodeName, a.Status.IPAddress)

	// 4. A node loses power; the leader dies once Ferry has seen the node unreachable.
	failed := b.Status.NodeName
	f.control("POST", "/nodes/"+failed+"/poweroff")
	eventually(t, 60*time.Second, "Ferry sees node "+failed+" unreachable", func() (bool, string) {
		vm := f.vm(ns, "vm-b")
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionNodeReachable)
		return c != nil && c.Status == metav1.ConditionFalse, fmt.Sprintf("%+v", c)
	})
	f.killLeader()
	b = f.waitMoved(ns, "vm-b", b)
	t.Logf("leader killed mid-failover: vm-b restarted on %s, address %s", b.Status.NodeName, b.Status.IPAddress)

	// vm-a may have shared the failed node: it too runs elsewhere by now.
	f.waitRunning(ns, "vm-a", failed)

	// Every guest ran once at a time; nobody was refused anything.
	var guests simnode.GuestReport
	if err := json.Unmarshal(f.control("GET", "/guests"), &guests); err != nil {
		t.Fatal(err)
	}
	if len(guests.Overlaps) > 0 {
		t.Errorf("guests ran in two places at once: %+v", guests.Overlaps)
	}
	for _, vm := range []string{"vm-a", "vm-b"} {
		var running []string
		for k, v := range guests.Running {
			if strings.HasSuffix(k, vm) {
				running = append(running, v...)
			}
		}
		if len(running) != 1 {
			t.Errorf("%s: %d guests run (%v), want 1", vm, len(running), running)
		}
	}
	t.Logf("guests: starts %v, overlaps %d", guests.Starts, len(guests.Overlaps))
	f.stopAll()
	// An RBAC refusal, or one of the agent's node policies.
	forbidden := regexp.MustCompile(`forbidden: (User "|ValidatingAdmissionPolicy)`)
	for _, name := range f.logNames() {
		if !strings.Contains(filepath.Base(name), "controller-") && !strings.Contains(filepath.Base(name), "nodes-") {
			continue // ferry up's own components run as admin
		}
		b, _ := os.ReadFile(name)
		for _, line := range strings.Split(string(b), "\n") {
			if forbidden.MatchString(line) {
				t.Errorf("%s: %s", filepath.Base(name), line)
			}
		}
	}
}
