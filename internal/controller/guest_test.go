package controller_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// setGuest plays the node agent: it sets the pod's guest-ready gate (and Ready with it) and,
// with report non-nil, the guest-agent condition.
func setGuest(t *testing.T, pod *corev1.Pod, gate corev1.ConditionStatus, reason, msg string, report *v1alpha2.GuestAgentReport) {
	t.Helper()
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	agent := corev1.PodCondition{Type: v1alpha2.PodConditionGuestAgent, Status: corev1.ConditionFalse, Reason: v1alpha2.ReasonAgentNotReady, LastTransitionTime: now}
	if report != nil {
		b, _ := json.Marshal(report)
		agent.Status, agent.Reason, agent.Message = corev1.ConditionTrue, v1alpha2.ReasonAgentReady, string(b)
	}
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodReady, Status: gate, Reason: reason, Message: msg, LastTransitionTime: now},
		{Type: v1alpha2.PodConditionGuestReady, Status: gate, Reason: reason, Message: msg, LastTransitionTime: now},
		agent,
	}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// A VM's status follows QEMU and the guest agent: Running while QEMU runs the guest (it may
// print nothing), AgentReady and guestOSInfo from the agent, Degraded only on evidence.
// A panicked guest is restarted by AlwaysOn, after the status showed why; Manual leaves it.
func TestGuestAgentAndPanic(t *testing.T) {
	for _, policy := range []v1alpha2.RunPolicy{v1alpha2.AlwaysOn, v1alpha2.Manual} {
		t.Run(string(policy), func(t *testing.T) {
			ns := newNamespace(t)
			makeImageDisk(t, ns, "root")
			vm := newVM(ns, "vm", "root", policy)
			if policy == v1alpha2.Manual {
				vm.Annotations = map[string]string{v1alpha2.AnnotationPowerState: "On"}
			}
			if err := k8s.Create(ctx, vm); err != nil {
				t.Fatal(err)
			}
			first := waitPod(t, ns, "vm")
			if args := strings.Join(first.Spec.Containers[0].Args, " "); !strings.Contains(args, "--shutdown-grace 55s") {
				t.Errorf("launcher args %q: want --shutdown-grace 55s (60 s grace, less the time QEMU needs to quit)", args)
			}
			runPod(t, &first, "node-a")
			setGuest(t, &first, corev1.ConditionTrue, v1alpha2.ReasonGuestRunning, "QEMU runs the guest's vCPUs", nil)
			got := waitPhase(t, ns, "vm", v1alpha2.MachineRunning)
			if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.VMConditionAgentReady); c == nil || c.Status != metav1.ConditionFalse {
				t.Errorf("AgentReady %+v, want False while no agent answers", c)
			}

			report := &v1alpha2.GuestAgentReport{OS: &v1alpha2.GuestOSInfo{ID: "debian", Name: "Debian GNU/Linux", VersionID: "12", KernelRelease: "6.1.0-28-cloud-amd64"},
				Interfaces: []v1alpha2.GuestInterface{{Name: "ens4", IPAddresses: []string{"10.66.10.5"}}}}
			setGuest(t, &first, corev1.ConditionTrue, v1alpha2.ReasonGuestRunning, "QEMU runs the guest's vCPUs", report)
			eventually(t, timeout, "AgentReady and guestOSInfo", func() (bool, string) {
				vm := getVM(t, ns, "vm")
				c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionAgentReady)
				ok := c != nil && c.Status == metav1.ConditionTrue && vm.Status.GuestOSInfo != nil && vm.Status.GuestOSInfo.ID == "debian" &&
					len(vm.Status.Interfaces) == 1 && vm.Status.Interfaces[0].Name == "ens4"
				return ok, fmt.Sprintf("AgentReady %+v, guestOSInfo %+v, interfaces %+v", c, vm.Status.GuestOSInfo, vm.Status.Interfaces)
			})

			setGuest(t, &first, corev1.ConditionFalse, v1alpha2.ReasonGuestPanicked, "the guest's kernel panicked (QEMU event GUEST_PANICKED, action pause)", report)
			if policy == v1alpha2.Manual {
				got = waitPhase(t, ns, "vm", v1alpha2.MachineDegraded)
				c := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.VMConditionRunning)
				if c == nil || c.Reason != v1alpha2.ReasonGuestPanicked || !strings.Contains(c.Message, "runPolicy Manual leaves the guest paused") {
					t.Errorf("Running %+v: want reason GuestPanicked and what runPolicy Manual does", c)
				}
				holdsFor(t, 3*time.Second, "the panicked Manual VM left as it is", func() (bool, string) {
					vm := getVM(t, ns, "vm")
					pods := livePods(t, ns, "vm")
					return vm.Status.Phase == v1alpha2.MachineDegraded && len(pods) == 1 && pods[0].Name == first.Name,
						fmt.Sprintf("phase %s, %d live pods", vm.Status.Phase, len(pods))
				})
				return
			}
			// AlwaysOn shows Degraded (briefly: the restart waits only for that status write)
			// and restarts the guest.
			waitEvent(t, ns, "VirtualMachine", "vm", v1alpha2.ReasonGuestPanicked)
			eventually(t, timeout, "the panicked pod replaced by one new pod", func() (bool, string) {
				var list corev1.PodList
				k8s.List(ctx, &list, client.InNamespace(ns))
				var desc []string
				for _, p := range list.Items {
					desc = append(desc, fmt.Sprintf("%s phase=%s deleting=%v node=%s", p.Name, p.Status.Phase, p.DeletionTimestamp != nil, p.Spec.NodeName))
				}
				return len(livePods(t, ns, "vm")) == 1 && livePods(t, ns, "vm")[0].Name != first.Name, strings.Join(desc, "; ")
			})
			second := waitPod(t, ns, "vm")
			if second.Name == first.Name {
				t.Fatal("the panicked guest's pod was not replaced")
			}
			if vm := getVM(t, ns, "vm"); vm.Status.RestartCount != 1 {
				t.Errorf("restartCount %d, want 1", vm.Status.RestartCount)
			}
		})
	}
}
