package realkubelet

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent/deviceplugin"
)

// TestLaunchersUnprivileged: deploy/base runs launcher pods without privilege
// (--launcher-devices=plugin): every node's agent offers /dev/net/tun through its device
// plugin, registered with the node's kubelet; the VM's launcher pod requests it, is not
// privileged, and its launcher process runs with exactly NET_ADMIN, NET_RAW and
// NET_BIND_SERVICE, no new privileges and the runtime's seccomp filter (docs/security.md).
func TestLaunchersUnprivileged(t *testing.T) {
	var nodes corev1.NodeList
	if err := kc.List(t.Context(), &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		eventually(t, time.Minute, "node "+n.Name+" offers "+v1alpha2.ResourceTun, func() (bool, string) {
			var node corev1.Node
			if err := kc.Get(t.Context(), client.ObjectKey{Name: n.Name}, &node); err != nil {
				return false, err.Error()
			}
			q := node.Status.Allocatable[corev1.ResourceName(v1alpha2.ResourceTun)]
			return q.Value() == deviceplugin.DefaultUnits, fmt.Sprintf("allocatable %v", node.Status.Allocatable)
		})
	}

	vm := waitRunning(t, vmName, 3*time.Minute)
	pod := activePod(t, vm)
	c := pod.Spec.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.Privileged != nil && *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("launcher pod %s: security context %+v, want unprivileged without privilege escalation", pod.Name, sc)
	}
	if q := c.Resources.Limits[corev1.ResourceName(v1alpha2.ResourceTun)]; q.Value() != 1 {
		t.Errorf("launcher pod %s: limits %v, want %s: 1", pod.Name, c.Resources.Limits, v1alpha2.ResourceTun)
	}
	if r, l := c.Resources.Requests.Memory(), c.Resources.Limits.Memory(); r.Cmp(*l) != 0 {
		t.Errorf("launcher pod %s: memory request %s, limit %s, want them equal", pod.Name, r, l)
	}

	// The launcher as the node's kernel sees it: a process of this machine.
	out, err := exec.Command("pgrep", "-f", "ferry-launcher --vm "+vmName+" ").Output()
	pids := strings.Fields(string(out))
	if err != nil || len(pids) == 0 {
		t.Fatalf("no launcher process of %s: %v", vmName, err)
	}
	status, err := os.ReadFile("/proc/" + pids[0] + "/status")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"CapEff":     fmt.Sprintf("%016x", 1<<unix.CAP_NET_ADMIN|1<<unix.CAP_NET_RAW|1<<unix.CAP_NET_BIND_SERVICE),
		"NoNewPrivs": "1",
		"Seccomp":    strconv.Itoa(unix.SECCOMP_MODE_FILTER),
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if w, ok := want[k]; ok {
			if strings.TrimSpace(v) != w {
				t.Errorf("launcher (pid %s) %s: %s, want %s", pids[0], k, strings.TrimSpace(v), w)
			}
			delete(want, k)
		}
	}
	if len(want) > 0 {
		t.Errorf("launcher (pid %s): no %v in its status", pids[0], want)
	}
}
