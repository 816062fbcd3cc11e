package realkubelet

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/realnode"
	"github.com/ferryvm/ferry/internal/up"
)

const vmName = up.SampleVM

// TestRealNodes: the nodes are real kubelets on containerd, each on credentials that let it
// change only its own Node; Ferry runs on them from deploy/base, and its pods' logs come
// through the kubelets.
func TestRealNodes(t *testing.T) {
	t.Logf("ferry up --kubelet=real: up in %s", setUp.Round(100*time.Millisecond))
	var nodes corev1.NodeList
	if err := kc.List(t.Context(), &nodes); err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) != 3 {
		t.Fatalf("%d nodes, want 3", len(nodes.Items))
	}
	for _, n := range nodes.Items {
		if rt := n.Status.NodeInfo.ContainerRuntimeVersion; !strings.HasPrefix(rt, "containerd://") {
			t.Errorf("node %s runs %q, not containerd", n.Name, rt)
		}
		if v := n.Status.NodeInfo.KubeletVersion; v != "v1.37.2" {
			t.Errorf("node %s: kubelet %q", n.Name, v)
		}
		// Ferry's agent says whether it can fence the node: here by the watchdog process.
		var fencing *corev1.NodeCondition
		for i, c := range n.Status.Conditions {
			if c.Type == v1alpha2.NodeConditionFencing {
				fencing = &n.Status.Conditions[i]
			}
		}
		if fencing == nil || fencing.Status != corev1.ConditionTrue {
			t.Errorf("node %s: fencing condition %+v, want True (the watchdog process)", n.Name, fencing)
		}
	}
	// node-1's own credentials may not touch node-2 (Node authorizer and NodeRestriction).
	own := filepath.Join(up.NodeDir(stateDir, "node-1"), "real", "kubelet.kubeconfig")
	out, err := ferry(t, "k", "--kubeconfig", own, "label", "node", "node-2", "stolen=yes")
	if err == nil || !strings.Contains(out, "forbidden") {
		t.Errorf("node-1 labelled node-2 with its own credentials: %v\n%s", err, out)
	}
	// Logs through the kubelet: a controller replica's (leader or standby, both serve the
	// webhooks), from its Deployment pod.
	logs := mustFerry(t, "k", "-n", "ferry-system", "logs", "deploy/ferry-controller", "--tail", "200")
	if !strings.Contains(logs, "Serving webhook server") {
		t.Errorf("controller logs through the kubelet:\n%s", logs)
	}
}

// TestSeedScenarios follows the seed (reliability.ru.md) on real kubelets: live migration
// by Evict, watched with `kubectl get vm -w`; maintenance with both of the seed's drain
// commands and uncordon; a node's power loss (every process of the node, kubelet and
// containerd included, killed at once) with the VM started elsewhere only after the node
// was fenced, and never running twice.
func TestSeedScenarios(t *testing.T) {
	vm := waitRunning(t, vmName, 3*time.Minute)
	created := vm.CreationTimestamp.Time
	if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionRunning); c != nil {
		t.Logf("VM %s created → Running in %s", vmName, c.LastTransitionTime.Sub(created).Round(100*time.Millisecond))
	}
	ip := vm.Status.IPAddress

	t.Run("Evict", func(t *testing.T) {
		before := waitRunning(t, vmName, time.Minute)
		last := heartbeat(t, before, 0)
		stop := watchVMs(t)
		t0 := time.Now()
		mustFerry(t, "k", "apply", "-f", writeTemp(t, fmt.Sprintf(`apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachineOperation
metadata:
  name: evict-%s
spec:
  type: Evict
  virtualMachineName: %s
`, vmName, vmName)))
		var op v1alpha2.VirtualMachineOperation
		eventually(t, 3*time.Minute, "Evict Completed", func() (bool, string) {
			if err := kc.Get(t.Context(), client.ObjectKey{Namespace: "default", Name: "evict-" + vmName}, &op); err != nil {
				return false, err.Error()
			}
			if op.Status.Phase == v1alpha2.OpFailed {
				t.Fatalf("Evict failed: %+v", op.Status)
			}
			return op.Status.Phase == v1alpha2.OpCompleted, string(op.Status.Phase)
		})
		took := time.Since(t0)
		after := waitRunning(t, vmName, time.Minute)
		watched := stop()
		t.Logf("Evict on real kubelets: %s → %s in %s\n%s", before.Status.NodeName, after.Status.NodeName, took.Round(100*time.Millisecond), watched)
		if after.Status.NodeName == before.Status.NodeName || after.Status.IPAddress != ip {
			t.Errorf("after Evict: on %s with %s, was on %s with %s", after.Status.NodeName, after.Status.IPAddress, before.Status.NodeName, ip)
		}
		checkPhases(t, watched, before.Status.NodeName, after.Status.NodeName, ip)
		// The same guest, not a new boot: its heartbeat goes on from where it was.
		if got := heartbeat(t, after, last); got <= last {
			t.Errorf("guest counter %d after the migration, %d before", got, last)
		}
		if q := qemus(vmName); len(q) != 1 {
			t.Errorf("%d QEMUs of %s after the migration: %v", len(q), vmName, q)
		}
		mustFerry(t, "k", "delete", "vmop", "evict-"+vmName)
	})

	for _, drain := range []struct{ name, args string }{
		{"DrainIgnoreDaemonSets", "--ignore-daemonsets --delete-emptydir-data"},
		{"DrainPodSelector", "--pod-selector vm.kubevirt.internal.virtualization.deckhouse.io/name"},
	} {
		t.Run(drain.name, func(t *testing.T) {
			before := waitRunning(t, vmName, time.Minute)
			node := before.Status.NodeName
			last := heartbeat(t, before, 0)
			t0 := time.Now()
			out := mustFerry(t, append([]string{"k", "drain", node}, strings.Fields(drain.args)...)...)
			t.Cleanup(func() { _, _ = ferry(t, "k", "uncordon", node) })
			after := waitRunning(t, vmName, time.Minute)
			t.Logf("kubectl drain %s %s: %s; VM on %s\n%s", node, drain.args, time.Since(t0).Round(100*time.Millisecond), after.Status.NodeName, out)
			if after.Status.NodeName == node || after.Status.IPAddress != ip {
				t.Errorf("after the drain: on %s with %s", after.Status.NodeName, after.Status.IPAddress)
			}
			if got := heartbeat(t, after, last); got <= last {
				t.Errorf("guest counter %d after the drain, %d before: the guest was restarted, not migrated", got, last)
			}
			var n corev1.Node
			if err := kc.Get(t.Context(), client.ObjectKey{Name: node}, &n); err != nil || !n.Spec.Unschedulable {
				t.Errorf("drained node %s schedulable: %v", node, err)
			}
			mustFerry(t, "k", "uncordon", node)
			if err := kc.Get(t.Context(), client.ObjectKey{Name: node}, &n); err != nil || n.Spec.Unschedulable {
				t.Errorf("node %s still cordoned after uncordon: %v", node, err)
			}
		})
	}

	t.Run("PowerLoss", func(t *testing.T) {
		// The worst node to lose: the one of the leading controller replica, with the VM
		// on it. The standby must take over and fence it. (With only a preferred
		// anti-affinity both replicas landed on the first node Ready at install, and its
		// power loss left no controller; deploy/base now spreads them, checked here.)
		leaderNode := leaderControllerNode(t)
		var replicas corev1.PodList
		if err := kc.List(t.Context(), &replicas, client.InNamespace("ferry-system"), client.MatchingLabels{"app.kubernetes.io/name": "ferry-controller"}); err != nil {
			t.Fatal(err)
		}
		on := map[string]bool{}
		for _, p := range replicas.Items {
			on[p.Spec.NodeName] = true
		}
		if len(replicas.Items) != 2 || len(on) != 2 {
			t.Fatalf("controller replicas on nodes %v, want two replicas on two nodes", on)
		}
		if vm := waitRunning(t, vmName, time.Minute); vm.Status.NodeName != leaderNode {
			mustFerry(t, "v", "migrate", vmName, "--target-node", leaderNode, "--wait", "--timeout", "3m")
		}
		before := waitRunning(t, vmName, time.Minute)
		node := before.Status.NodeName
		if node != leaderNode {
			t.Fatalf("VM on %s, not on %s, the leading controller's node", node, leaderNode)
		}
		oldPod := activePod(t, before)
		// A second look at every QEMU of the VM, all along: never two.
		twice := make(chan []string, 1)
		stopCount := make(chan struct{})
		counted := make(chan struct{})
		go func() {
			defer close(counted)
			for {
				select {
				case <-stopCount:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if q := qemus(vmName); len(q) > 1 {
					select {
					case twice <- q:
					default:
					}
				}
			}
		}()
		t0 := time.Now()
		mustFerry(t, "node", "poweroff", node)
		t.Cleanup(func() { _, _ = ferry(t, "node", "poweron", node) })
		// The node is fenced between the last look that found its Node as before
		// (notFencedAt) and the first that did not (fencedAt).
		var fencedAt, notFencedAt time.Time
		eventually(t, 2*time.Minute, "node "+node+" fenced", func() (bool, string) {
			var n corev1.Node
			looked := time.Now()
			err := kc.Get(t.Context(), client.ObjectKey{Name: node}, &n)
			if apierrors.IsNotFound(err) || err == nil && n.CreationTimestamp.After(t0) {
				fencedAt = time.Now()
				return true, ""
			}
			if err == nil {
				notFencedAt = looked
			}
			return false, fmt.Sprintf("node %s: %v", node, err)
		})
		var after *v1alpha2.VirtualMachine
		eventually(t, 2*time.Minute, "VM Running on another node", func() (bool, string) {
			after = getVM(t, vmName)
			return after.Status.Phase == v1alpha2.MachineRunning && after.Status.NodeName != node && after.Status.NodeName != "",
				fmt.Sprintf("%s on %q", after.Status.Phase, after.Status.NodeName)
		})
		back := time.Since(t0)
		close(stopCount)
		<-counted
		select {
		case q := <-twice:
			t.Errorf("the VM ran twice: %v", q)
		default:
		}
		if after.Status.NodeName == node || after.Status.IPAddress != ip {
			t.Errorf("after the power loss: on %s with %s", after.Status.NodeName, after.Status.IPAddress)
		}
		// Started only once the node was fenced: the new launcher pod was made after. Its
		// creation time is in whole seconds (rounded down), so it was made before the
		// second that follows; that must not be before the node was last seen unfenced.
		newPod := activePod(t, after)
		if newPod.Name == oldPod.Name || newPod.CreationTimestamp.Time.Add(time.Second).Before(notFencedAt) {
			t.Errorf("new launcher pod %s created %s, the node was last seen unfenced at %s (fenced by %s)", newPod.Name, newPod.CreationTimestamp,
				notFencedAt.Format(time.RFC3339Nano), fencedAt.Format(time.RFC3339Nano))
		}
		t.Logf("power loss of %s: fenced %s after, VM Running on %s %s after", node, fencedAt.Sub(t0).Round(100*time.Millisecond), after.Status.NodeName, back.Round(100*time.Millisecond))

		mustFerry(t, "node", "poweron", node)
		eventually(t, 2*time.Minute, "node "+node+" Ready again", func() (bool, string) {
			var n corev1.Node
			if err := kc.Get(t.Context(), client.ObjectKey{Name: node}, &n); err != nil {
				return false, err.Error()
			}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					return c.Status == corev1.ConditionTrue, string(c.Status)
				}
			}
			return false, "no Ready condition"
		})
		if q := qemus(vmName); len(q) != 1 {
			t.Errorf("%d QEMUs of %s after the node rejoined: %v", len(q), vmName, q)
		}
	})
}

// TestGracefulStop: a stop on a real kubelet ends the launcher within the VM's grace
// period (the kubelet's SIGTERM, then the launcher's stop sequence), and leaves no QEMU; the
// VM then starts again.
func TestGracefulStop(t *testing.T) {
	vm := waitRunning(t, vmName, 2*time.Minute)
	grace := time.Duration(60) * time.Second
	if vm.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*vm.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	t0 := time.Now()
	mustFerry(t, "v", "stop", vmName, "--wait", "--timeout", "3m")
	took := time.Since(t0)
	eventually(t, 30*time.Second, "no QEMU of the stopped VM", func() (bool, string) {
		q := qemus(vmName)
		return len(q) == 0, fmt.Sprint(q)
	})
	if got := getVM(t, vmName); got.Status.Phase != v1alpha2.MachineStopped {
		t.Errorf("after stop: %s", got.Status.Phase)
	}
	if took > grace {
		t.Errorf("stop took %s, more than the grace period %s", took, grace)
	}
	t.Logf("stop on a real kubelet: %s (grace %s)", took.Round(100*time.Millisecond), grace)
	mustFerry(t, "v", "start", vmName, "--wait", "--timeout", "3m")
	waitRunning(t, vmName, 2*time.Minute)
}

// leaderControllerNode is the node of the controller replica that holds the leader
// Lease (its holder identity starts with the pod's name, which is its hostname).
func leaderControllerNode(t *testing.T) string {
	t.Helper()
	var node string
	eventually(t, time.Minute, "a leading controller replica", func() (bool, string) {
		var l coordinationv1.Lease
		if err := kc.Get(t.Context(), client.ObjectKey{Namespace: "ferry-system", Name: "ferry-controller"}, &l); err != nil || l.Spec.HolderIdentity == nil {
			return false, fmt.Sprint(err)
		}
		var pods corev1.PodList
		if err := kc.List(t.Context(), &pods, client.InNamespace("ferry-system"), client.MatchingLabels{"app.kubernetes.io/name": "ferry-controller"}); err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if strings.HasPrefix(*l.Spec.HolderIdentity, p.Name+"_") && p.Spec.NodeName != "" {
				node = p.Spec.NodeName
				return true, ""
			}
		}
		return false, "holder " + *l.Spec.HolderIdentity
	})
	return node
}

// checkPhases reads `kubectl get vm -w` output: the VM's phases go Running (on from) →
// Migrating → Running (on to), with the same address all along and nothing in between.
func checkPhases(t *testing.T, watched, from, to, ip string) {
	t.Helper()
	var seq []string
	for _, line := range strings.Split(watched, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != vmName {
			continue
		}
		if f[3] != ip {
			t.Errorf("watch shows address %s, want %s: %q", f[3], ip, line)
		}
		step := f[1] + " " + f[2]
		if len(seq) == 0 || seq[len(seq)-1] != step {
			seq = append(seq, step)
		}
	}
	want := []string{"Running " + from, "Migrating " + from, "Running " + to}
	if strings.Join(seq, " → ") != strings.Join(want, " → ") {
		t.Errorf("kubectl get vm -w: %s, want %s", strings.Join(seq, " → "), strings.Join(want, " → "))
	}
}

func activePod(t *testing.T, vm *v1alpha2.VirtualMachine) *corev1.Pod {
	t.Helper()
	for _, p := range vm.Status.VirtualMachinePods {
		if p.Active {
			var pod corev1.Pod
			if err := kc.Get(t.Context(), client.ObjectKey{Namespace: vm.Namespace, Name: p.Name}, &pod); err != nil {
				t.Fatal(err)
			}
			return &pod
		}
	}
	t.Fatalf("VM %s has no active pod: %+v", vm.Name, vm.Status.VirtualMachinePods)
	return nil
}

var cnt = regexp.MustCompile(`(?m)^CNT (\d+)\s*$`)

// heartbeat waits until the test guest's counter, in its serial log, passes min and
// returns it. The launcher pod says where its run directory is on its node
// (/var/lib/ferry/node/...): on a node of ferry up that is the node's directory here.
func heartbeat(t *testing.T, vm *v1alpha2.VirtualMachine, min int) int {
	t.Helper()
	last := -1
	eventually(t, time.Minute, fmt.Sprintf("guest counting past %d", min), func() (bool, string) {
		vm := getVM(t, vm.Name)
		if vm.Status.NodeName == "" {
			return false, "no node"
		}
		pod := activePod(t, vm)
		dir := pod.Annotations[v1alpha2.AnnotationRunDir]
		rel, ok := strings.CutPrefix(dir, realnode.NodeStateDir)
		if !ok {
			return false, "run dir " + dir
		}
		raw, err := os.ReadFile(filepath.Join(up.NodeDir(stateDir, pod.Spec.NodeName), rel, hypervisor.SerialLogName))
		if err != nil {
			return false, err.Error()
		}
		m := cnt.FindAllStringSubmatch(string(raw), -1)
		if len(m) == 0 {
			return false, "no CNT yet"
		}
		last, _ = strconv.Atoi(m[len(m)-1][1])
		return last > min, fmt.Sprintf("CNT %d", last)
	})
	return last
}

// writeTemp writes content to a file in the test's temporary directory, for kubectl
// apply -f.
func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "obj.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
