package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/ipam"
)

// TestSampleVM: `ferry up` made Ready nodes and a sample VM that runs, has an address from
// the range and a guest that counts.
func TestSampleVM(t *testing.T) {
	out := mustFerry(t, "k", "get", "nodes")
	if n := strings.Count(out, " Ready "); n != cl.nodes {
		t.Fatalf("want %d Ready nodes:\n%s", cl.nodes, out)
	}
	vm := waitRunning(t, "linux-vm", 2*time.Minute)
	out = mustFerry(t, "k", "get", "vm")
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if strings.Join(header, " ") != "NAME PHASE NODE IPADDRESS AGE" {
		t.Errorf("columns %v, want NAME PHASE NODE IPADDRESS AGE", header)
	}
	if !strings.Contains(out, "linux-vm") || !strings.Contains(out, vm.Status.NodeName) || !strings.Contains(out, vm.Status.IPAddress) {
		t.Errorf("get vm does not show the VM's node and address:\n%s", out)
	}
	r, _ := ipam.ParseRanges(ipam.DefaultRanges)
	if err := r.Check(vm.Status.IPAddress); err != nil {
		t.Errorf("address: %v", err)
	}
	first := waitHeartbeat(t, "linux-vm", 0, time.Minute)
	waitHeartbeat(t, "linux-vm", first+1, 30*time.Second)
}

// TestPowerOperations: Stop, Start and Restart through `ferry v … --wait`.
func TestPowerOperations(t *testing.T) {
	waitRunning(t, "linux-vm", 2*time.Minute)
	before := runDirOf(t, activePod(t, "linux-vm")) + "/"

	mustFerry(t, "v", "stop", "linux-vm", "--wait", "--timeout", "2m")
	if vm := getVM(t, "linux-vm"); vm.Status.Phase != v1alpha2.MachineStopped {
		t.Fatalf("phase %s after stop", vm.Status.Phase)
	}
	eventually(t, 30*time.Second, "QEMU of the stopped VM gone", func() (bool, string) {
		q := qemuProcesses(before)
		return len(q) == 0, strings.Join(q, "\n")
	})

	mustFerry(t, "v", "start", "linux-vm", "--wait", "--timeout", "2m")
	started := activePod(t, "linux-vm")
	waitHeartbeat(t, "linux-vm", 1, time.Minute)

	mustFerry(t, "v", "restart", "linux-vm", "--wait", "--timeout", "2m")
	restarted := activePod(t, "linux-vm")
	if restarted == started {
		t.Fatalf("restart kept pod %s", started)
	}
	// Running means QEMU runs the guest; the guest's own boot line follows a few seconds on.
	eventually(t, time.Minute, "the restarted guest booting anew", func() (bool, string) {
		log, _ := ferry(t, "v", "console", "linux-vm", "--log")
		return strings.Contains(log, "FERRY-GUEST BOOTED"), log
	})
}

func activePod(t *testing.T, vm string) string {
	t.Helper()
	for _, p := range getVM(t, vm).Status.VirtualMachinePods {
		if p.Active {
			return p.Name
		}
	}
	t.Fatalf("VM %s has no active pod", vm)
	return ""
}

const alwaysOnVM = `
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualDisk
metadata:
  name: always-root
spec:
  dataSource:
    type: ObjectRef
    objectRef:
      kind: ClusterVirtualImage
      name: ferry-guest
---
apiVersion: virtualization.deckhouse.io/v1alpha2
kind: VirtualMachine
metadata:
  name: always
spec:
  runPolicy: AlwaysOn
  cpu:
    cores: 1
  memory:
    size: 128Mi
  blockDeviceRefs:
    - kind: VirtualDisk
      name: always-root
`

// TestAlwaysOnComesBackAndDeleteCleansUp: an AlwaysOn VM whose QEMU is killed starts
// again; deleting it removes its pod, its QEMU and its address lease.
func TestAlwaysOnComesBackAndDeleteCleansUp(t *testing.T) {
	apply(t, alwaysOnVM)
	waitRunning(t, "always", 2*time.Minute)
	waitHeartbeat(t, "always", 1, time.Minute)
	pod := activePod(t, "always")
	runDir := runDirOf(t, pod)
	pid := readPID(t, filepath.Join(runDir, hypervisor.PIDFileName))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "AlwaysOn VM running again in a new pod", func() (bool, string) {
		vm := getVM(t, "always")
		p := ""
		for _, x := range vm.Status.VirtualMachinePods {
			if x.Active {
				p = x.Name
			}
		}
		return vm.Status.Phase == v1alpha2.MachineRunning && p != "" && p != pod, fmt.Sprintf("%s in %s", vm.Status.Phase, p)
	})
	waitHeartbeat(t, "always", 1, time.Minute)

	vm := getVM(t, "always")
	last := vmQEMUMarker("always")
	mustFerry(t, "k", "delete", "vm", "always", "--wait=true", "--timeout=2m")
	var pods corev1.PodList
	if err := cl.c.List(context.Background(), &pods, client.InNamespace("default"), client.MatchingLabels{v1alpha2.LabelVMName: "always"}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 0 {
		t.Errorf("%d pods left after deleting the VM", len(pods.Items))
	}
	if q := qemuProcesses(last); len(q) != 0 {
		t.Errorf("QEMU still runs after deleting the VM: %v", q)
	}
	// The VM's own VirtualMachineIPAddress goes with it; its lease is Released, kept for
	// the namespace for a while (as Deckhouse), then deleted.
	eventually(t, time.Minute, "the VM's address released", func() (bool, string) {
		lease := &v1alpha2.VirtualMachineIPAddressLease{}
		err := cl.c.Get(context.Background(), client.ObjectKey{Name: ipam.LeaseName(vm.Status.IPAddress)}, lease)
		if err != nil {
			return client.IgnoreNotFound(err) == nil, err.Error()
		}
		return lease.Status.Phase == v1alpha2.VirtualMachineIPAddressLeasePhaseReleased, fmt.Sprintf("lease %s %s %+v", lease.Name, lease.Status.Phase, lease.Spec.VirtualMachineIPAddressRef)
	})
	mustFerry(t, "k", "delete", "vd", "always-root", "--wait=true", "--timeout=1m")
}

// TestInvalidVMIsRefused: kubectl shows the user what to fix.
func TestInvalidVMIsRefused(t *testing.T) {
	bad := strings.Replace(strings.Replace(alwaysOnVM, "size: 128Mi", "size: 64Mi", 1), "name: always\n", "name: tiny\n", 1)
	out, err := applyErr(t, bad)
	if err == nil {
		t.Fatalf("a 64Mi VM was accepted:\n%s", out)
	}
	if !strings.Contains(out, "memory.size must be at least 96Mi") {
		t.Errorf("the refusal does not say what to fix:\n%s", out)
	}
	_, _ = ferry(t, "k", "delete", "vd", "always-root", "--ignore-not-found")
}

// TestStopAndResume: Ctrl-C stops everything within 10 s leaving no QEMU or namespace;
// `ferry up` on the same state directory brings the VM back.
func TestStopAndResume(t *testing.T) {
	vm := waitRunning(t, "linux-vm", 2*time.Minute)
	pod := activePod(t, "linux-vm")
	took := cl.stop()
	t.Logf("ferry up stopped in %s", took)
	if took > 10*time.Second {
		t.Errorf("stopping took %s, more than 10s", took)
	}
	if q := qemuProcesses(cl.stateDir); len(q) != 0 {
		t.Errorf("QEMU left behind: %v", q)
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "ferry-node-") {
		t.Errorf("namespaces left behind:\n%s", out)
	}
	if err := cl.start(); err != nil {
		t.Fatal(err)
	}
	// The status read first is the one from before the stop: wait for the new pod.
	var again *v1alpha2.VirtualMachine
	eventually(t, 2*time.Minute, "linux-vm running in a new pod", func() (bool, string) {
		again = getVM(t, "linux-vm")
		p := ""
		for _, x := range again.Status.VirtualMachinePods {
			if x.Active {
				p = x.Name
			}
		}
		return again.Status.Phase == v1alpha2.MachineRunning && p != "" && p != pod, fmt.Sprintf("%s in %s", again.Status.Phase, p)
	})
	if again.UID != vm.UID || again.Status.IPAddress != vm.Status.IPAddress {
		t.Errorf("after resume: uid %s ip %s, before uid %s ip %s", again.UID, again.Status.IPAddress, vm.UID, vm.Status.IPAddress)
	}
	waitHeartbeat(t, "linux-vm", 1, time.Minute)
}

func apply(t *testing.T, yaml string) {
	t.Helper()
	if out, err := applyErr(t, yaml); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
}

func applyErr(t *testing.T, yaml string) (string, error) {
	t.Helper()
	cmd := exec.Command(cl.bin, "--state-dir", cl.stateDir, "k", "apply", "-f", "-")
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	cmd.Stdin = strings.NewReader(yaml)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func runDirOf(t *testing.T, pod string) string {
	t.Helper()
	var p corev1.Pod
	if err := cl.c.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: pod}, &p); err != nil {
		t.Fatal(err)
	}
	d := p.Annotations[kubelet.AnnotationRunDir]
	if d == "" {
		t.Fatalf("pod %s has no run directory annotation", pod)
	}
	return d
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	var pid int
	eventually(t, 30*time.Second, "pid file "+path, func() (bool, string) {
		b, err := os.ReadFile(path)
		if err != nil {
			return false, err.Error()
		}
		_, err = fmt.Sscan(strings.TrimSpace(string(b)), &pid)
		return err == nil && pid > 0, string(b)
	})
	return pid
}
