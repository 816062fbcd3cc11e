package evacuation

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func node(name string, change ...func(*corev1.Node)) corev1.Node {
	n := corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, c := range change {
		c(&n)
	}
	return n
}

func launcher(name, node, memory string) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memory)}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func runningVM(change ...func(*v1alpha2.VirtualMachine)) *v1alpha2.VirtualMachine {
	vm := &v1alpha2.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "default"},
		Status:     v1alpha2.VirtualMachineStatus{Phase: v1alpha2.MachineRunning, NodeName: "n1"},
	}
	for _, c := range change {
		c(vm)
	}
	return vm
}

func TestAssess(t *testing.T) {
	src := launcher("virt-launcher-vm-abcde", "n1", "512Mi")
	cordoned := func(n *corev1.Node) { n.Spec.Unschedulable = true }
	notReady := func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }
	tainted := func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}}
	}
	for _, tc := range []struct {
		name    string
		vm      *v1alpha2.VirtualMachine
		nodes   []corev1.Node
		others  []corev1.Pod
		targets []string
		reason  string
		say     string
	}{
		{name: "any other node", vm: runningVM(), nodes: []corev1.Node{node("n1"), node("n2"), node("n3")},
			others: []corev1.Pod{launcher("x", "n2", "1Gi")}, targets: []string{"n3", "n2"}, reason: ReasonMigratable},
		{name: "cordoned, not ready and tainted nodes are no targets", vm: runningVM(),
			nodes:  []corev1.Node{node("n1"), node("n2", cordoned), node("n3", notReady), node("n4", tainted)},
			reason: ReasonNoTargetNode, say: "n2 cordoned; n3 not Ready; n4 has taint dedicated=db:NoSchedule"},
		{name: "a tolerated taint is fine", vm: runningVM(func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "db", Effect: corev1.TaintEffectNoSchedule}}
		}), nodes: []corev1.Node{node("n1"), node("n4", tainted)}, targets: []string{"n4"}, reason: ReasonMigratable},
		{name: "pinned by nodeSelector", vm: runningVM(func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": "n1"}
		}), nodes: []corev1.Node{node("n1"), node("n2")}, reason: ReasonNoTargetNode, say: "n2 does not match the VM's nodeSelector/affinity"},
		{name: "required affinity", vm: runningVM(func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.Affinity = &v1alpha2.VirtualMachineAffinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{"n1", "n3"}}}}},
			}}}
		}), nodes: []corev1.Node{node("n1"), node("n2"), node("n3")}, targets: []string{"n3"}, reason: ReasonMigratable},
		{name: "no memory left", vm: runningVM(), nodes: []corev1.Node{node("n1"), node("n2")},
			others: []corev1.Pod{launcher("big", "n2", "1800Mi")}, reason: ReasonNoTargetNode, say: "n2 not enough memory (needs 512Mi, 248Mi free)"},
		{name: "only node", vm: runningVM(), nodes: []corev1.Node{node("n1")}, reason: ReasonNoTargetNode, say: "it is the only node"},
		{name: "degraded guest", vm: runningVM(func(vm *v1alpha2.VirtualMachine) { vm.Status.Phase = v1alpha2.MachineDegraded }),
			nodes: []corev1.Node{node("n1"), node("n2")}, reason: ReasonGuestFault},
		{name: "stopped", vm: runningVM(func(vm *v1alpha2.VirtualMachine) { vm.Status.Phase = v1alpha2.MachineStopped }),
			nodes: []corev1.Node{node("n1"), node("n2")}, reason: ReasonNotRunning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := Assess(tc.vm, &src, tc.nodes, append([]corev1.Pod{src}, tc.others...))
			if a.Reason != tc.reason || a.Migratable != (tc.reason == ReasonMigratable) {
				t.Fatalf("reason %s migratable %v (%s), want %s", a.Reason, a.Migratable, a.Message, tc.reason)
			}
			if strings.Join(a.Targets, ",") != strings.Join(tc.targets, ",") {
				t.Errorf("targets %v, want %v", a.Targets, tc.targets)
			}
			if !strings.Contains(a.Message, tc.say) {
				t.Errorf("message %q does not say %q", a.Message, tc.say)
			}
		})
	}
}

func TestBackoffDoublesUpToMax(t *testing.T) {
	b := Backoff{First: 10 * time.Second, Max: time.Minute}
	var got []time.Duration
	for n := 1; n <= 5; n++ {
		got = append(got, b.After(n))
	}
	want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
}

// A VM restarting after its node failed reads the same from its pod's end until its guest
// runs again, so its Migratable condition is written once on the way, not at each step.
func TestRestartReadsTheSameUntilRunning(t *testing.T) {
	nodes := []corev1.Node{node("n1"), node("n2")}
	starting := launcher("virt-launcher-vm-fghij", "n2", "512Mi")
	starting.Status.Conditions = nil
	steps := []struct {
		name  string
		phase v1alpha2.MachinePhase
		pod   *corev1.Pod
	}{
		{"pod ended, status not yet changed", v1alpha2.MachineRunning, nil},
		{"restart pending", v1alpha2.MachinePending, nil},
		{"new pod placed", v1alpha2.MachinePending, &starting},
		{"guest starting", v1alpha2.MachineStarting, &starting},
	}
	var first Assessment
	for i, st := range steps {
		vm := runningVM(func(vm *v1alpha2.VirtualMachine) { vm.Status.Phase = st.phase })
		a := Assess(vm, st.pod, nodes, nil)
		if a.Migratable || a.Reason != ReasonNotRunning || NotMeantToRun(vm) {
			t.Fatalf("%s: migratable %v, reason %s, not meant to run %v", st.name, a.Migratable, a.Reason, NotMeantToRun(vm))
		}
		if i == 0 {
			first = a
		} else if a.Message != first.Message {
			t.Errorf("%s: message %q, before %q", st.name, a.Message, first.Message)
		}
	}
	stopped := runningVM(func(vm *v1alpha2.VirtualMachine) { vm.Status.Phase = v1alpha2.MachineStopped })
	if !NotMeantToRun(stopped) {
		t.Error("a Stopped VM is meant to run")
	}
}
