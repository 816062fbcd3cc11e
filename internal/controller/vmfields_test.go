package controller_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// editVM changes a VM's spec or labels with retries on conflicts.
func editVM(t *testing.T, ns, name string, edit func(*v1alpha2.VirtualMachine)) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vm := getVM(t, ns, name)
		edit(vm)
		return k8s.Update(ctx, vm)
	}); err != nil {
		t.Fatal(err)
	}
}

// waitCondition waits for the VM's condition of type typ to be as want says ("" status:
// absent) and returns the VM.
func waitCondition(t *testing.T, ns, name, typ string, status metav1.ConditionStatus, reason string) *v1alpha2.VirtualMachine {
	t.Helper()
	var vm *v1alpha2.VirtualMachine
	eventually(t, timeout, fmt.Sprintf("VM %s condition %s %q %s", name, typ, status, reason), func() (bool, string) {
		vm = getVM(t, ns, name)
		c := meta.FindStatusCondition(vm.Status.Conditions, typ)
		if status == "" {
			return c == nil, fmt.Sprintf("%+v", c)
		}
		return c != nil && c.Status == status && (reason == "" || c.Reason == reason), fmt.Sprintf("%+v", c)
	})
	return vm
}

// TestMachineFieldsReachTheLauncherPod: osType, bootloader, enableParavirtualization,
// bootOrder, priorityClassName, topologySpreadConstraints and Deckhouse's
// virtualMachineAndPod(Anti)Affinity reach the launcher pod; the VM's labels are the
// pod's, also when they change while it runs; status.resources says what the pod gives.
func TestMachineFieldsReachTheLauncherPod(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "vm-high-" + ns}, Value: 1000}
	if err := k8s.Create(ctx, pc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, pc) })
	vm := newVM(ns, "m", "root", v1alpha2.AlwaysOn)
	vm.Labels = map[string]string{"app": "db"}
	vm.Spec.OSType, vm.Spec.Bootloader, vm.Spec.EnableParavirtualization = v1alpha2.OSWindows, v1alpha2.BootEFI, ptr.To(false)
	vm.Spec.BlockDeviceRefs[0].BootOrder = ptr.To(3)
	vm.Spec.CPU = v1alpha2.CPUSpec{Cores: 2, CoreFraction: "25%"}
	vm.Spec.PriorityClassName = pc.Name
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
	vm.Spec.TopologySpreadConstraints = []v1alpha2.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: sel}}
	vm.Spec.Affinity = &v1alpha2.VirtualMachineAffinity{
		VirtualMachineAndPodAntiAffinity: &v1alpha2.VirtualMachineAndPodAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{LabelSelector: sel, TopologyKey: "kubernetes.io/hostname"}}},
	}
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "m")
	args := strings.Join(pod.Spec.Containers[0].Args, " ") + " "
	vmUID := string(getVM(t, ns, "m").UID)
	for _, want := range []string{":boot=3 ", "--os-type Windows ", "--bootloader EFI ", "--efi-vars " + storageDir + "/firmware/" + ns + "/" + vmUID + "-efi.fd ", "--paravirtualization=false "} {
		if !strings.Contains(args, want) {
			t.Errorf("launcher args %q lack %q", args, want)
		}
	}
	if pod.Spec.PriorityClassName != pc.Name || pod.Spec.Priority == nil || *pod.Spec.Priority != 1000 {
		t.Errorf("priority class %q priority %v", pod.Spec.PriorityClassName, pod.Spec.Priority)
	}
	if len(pod.Spec.TopologySpreadConstraints) != 1 || pod.Spec.TopologySpreadConstraints[0].WhenUnsatisfiable != corev1.ScheduleAnyway {
		t.Errorf("spread %+v", pod.Spec.TopologySpreadConstraints)
	}
	if a := pod.Spec.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("affinity %+v", pod.Spec.Affinity)
	}
	if pod.Labels["app"] != "db" {
		t.Errorf("pod labels %v", pod.Labels)
	}
	runPod(t, &pod, "node-a")
	got := waitPhase(t, ns, "m", v1alpha2.MachineRunning)
	res := got.Status.Resources
	if res == nil || res.CPU.Cores != 2 || res.CPU.CoreFraction != "25%" || res.CPU.RequestedCores.String() != "500m" ||
		res.Memory.Size.String() != "128Mi" || res.Memory.RuntimeOverhead.Sign() <= 0 {
		t.Errorf("resources %+v", res)
	}
	if st := got.Status.Stats; st == nil || st.LastStartTime == nil || len(st.PhasesTransitions) == 0 ||
		st.PhasesTransitions[len(st.PhasesTransitions)-1].Phase != v1alpha2.MachineRunning || st.LaunchTimeDuration.VirtualMachineStarting == nil {
		t.Errorf("stats %+v", got.Status.Stats)
	}

	// Labels apply at once, to the running pod.
	editVM(t, ns, "m", func(vm *v1alpha2.VirtualMachine) { vm.Labels = map[string]string{"app": "web", "tier": "1"} })
	eventually(t, timeout, "the pod takes the VM's new labels", func() (bool, string) {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(&pod), &pod); err != nil {
			return false, err.Error()
		}
		return pod.Labels["app"] == "web" && pod.Labels["tier"] == "1" && pod.Labels[v1alpha2.LabelVMName] == "m", fmt.Sprint(pod.Labels)
	})
	// The spec and what it became stay apart: nothing awaits a restart.
	if c := meta.FindStatusCondition(getVM(t, ns, "m").Status.Conditions, v1alpha2.VMConditionAwaitingRestart); c != nil {
		t.Errorf("awaiting restart without a change: %+v", c)
	}
}

// TestChangesAwaitRestartManual: a change of a running VM that needs a restart shows as
// AwaitingRestartToApplyConfiguration and in status.restartAwaitingChanges until a Restart
// operation starts the VM again from its new spec; a change that applies live never does.
func TestChangesAwaitRestartManual(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newVM(ns, "m", "root", "")); err != nil {
		t.Fatal(err)
	}
	first := waitPod(t, ns, "m")
	runPod(t, &first, "node-a")
	waitPhase(t, ns, "m", v1alpha2.MachineRunning)

	editVM(t, ns, "m", func(vm *v1alpha2.VirtualMachine) {
		vm.Spec.LiveMigrationPolicy = v1alpha2.AlwaysForced
		vm.Spec.RunPolicy = v1alpha2.AlwaysOn
		vm.Spec.Disruptions = &v1alpha2.Disruptions{RestartApprovalMode: v1alpha2.RestartManual}
	})
	eventually(t, timeout, "the live change observed", func() (bool, string) {
		vm := getVM(t, ns, "m")
		return vm.Status.ObservedGeneration == vm.Generation, fmt.Sprintf("observed %d of %d", vm.Status.ObservedGeneration, vm.Generation)
	})
	if vm := getVM(t, ns, "m"); meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionAwaitingRestart) != nil || len(vm.Status.RestartAwaitingChanges) != 0 {
		t.Fatalf("a live change awaits a restart: %+v %s", vm.Status.Conditions, vm.Status.RestartAwaitingChanges)
	}

	editVM(t, ns, "m", func(vm *v1alpha2.VirtualMachine) {
		vm.Spec.CPU.Cores = 2
		vm.Spec.Bootloader = v1alpha2.BootEFI
	})
	vm := waitCondition(t, ns, "m", v1alpha2.VMConditionAwaitingRestart, metav1.ConditionTrue, v1alpha2.ReasonChangesPendingRestart)
	var changes []map[string]any
	for _, raw := range vm.Status.RestartAwaitingChanges {
		var c map[string]any
		if err := json.Unmarshal(raw.Raw, &c); err != nil {
			t.Fatal(err)
		}
		changes = append(changes, c)
	}
	if len(changes) != 2 || changes[0]["path"] != "bootloader" || changes[0]["desiredValue"] != "EFI" ||
		changes[1]["path"] != "cpu.cores" || changes[1]["currentValue"] != float64(1) || changes[1]["desiredValue"] != float64(2) {
		t.Errorf("restartAwaitingChanges %v", changes)
	}
	if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionConfigurationApplied); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("ConfigurationApplied %+v", c)
	}
	if n := livePods(t, ns, "m"); len(n) != 1 || n[0].Name != first.Name {
		t.Fatalf("Manual mode restarted the VM by itself: %d pods", len(n))
	}

	restart := newOp(ns, "restart", "m", v1alpha2.OpRestart)
	if err := k8s.Create(ctx, restart); err != nil {
		t.Fatal(err)
	}
	finishDeletion(t, &first)
	second := waitPod(t, ns, "m")
	args := strings.Join(second.Spec.Containers[0].Args, " ")
	if !strings.Contains(args, "--cpus 2") || !strings.Contains(args, "--bootloader EFI") {
		t.Errorf("the restarted VM's launcher args %q", args)
	}
	runPod(t, &second, "node-a")
	waitOp(t, restart, v1alpha2.OpCompleted, v1alpha2.ReasonOperationCompleted)
	vm = waitCondition(t, ns, "m", v1alpha2.VMConditionAwaitingRestart, "", "")
	if len(vm.Status.RestartAwaitingChanges) != 0 || meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionConfigurationApplied) != nil {
		t.Errorf("after the restart: %s %+v", vm.Status.RestartAwaitingChanges, vm.Status.Conditions)
	}
	if vm.Status.Resources == nil || vm.Status.Resources.CPU.Cores != 2 {
		t.Errorf("resources after the restart %+v", vm.Status.Resources)
	}
}

// TestChangesRestartAutomatic: with restartApprovalMode Automatic the controller restarts
// the VM as soon as a change that needs it is saved.
func TestChangesRestartAutomatic(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "m", "root", "")
	vm.Spec.Disruptions = &v1alpha2.Disruptions{RestartApprovalMode: v1alpha2.RestartAutomatic}
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	first := waitPod(t, ns, "m")
	runPod(t, &first, "node-a")
	waitPhase(t, ns, "m", v1alpha2.MachineRunning)

	editVM(t, ns, "m", func(vm *v1alpha2.VirtualMachine) { vm.Spec.Memory.Size = resource.MustParse("256Mi") })
	finishDeletion(t, &first)
	second := waitPod(t, ns, "m")
	if args := strings.Join(second.Spec.Containers[0].Args, " "); !strings.Contains(args, "--memory 256Mi") {
		t.Errorf("the restarted VM's launcher args %q", args)
	}
	runPod(t, &second, "node-a")
	vm = waitPhase(t, ns, "m", v1alpha2.MachineRunning)
	if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionAwaitingRestart); c != nil {
		t.Errorf("still awaiting a restart: %+v", c)
	}
}

// labelNode gives a node of a migration test a label.
func labelNode(t *testing.T, name, key, value string) {
	t.Helper()
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n := &corev1.Node{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
			return err
		}
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[key] = value
		return k8s.Update(ctx, n)
	}); err != nil {
		t.Fatal(err)
	}
}

// placementOps are the operations Ferry created to move the VM for its placement.
func placementOps(t *testing.T, ns string) []v1alpha2.VirtualMachineOperation {
	t.Helper()
	var ops v1alpha2.VirtualMachineOperationList
	if err := k8s.List(ctx, &ops, client.InNamespace(ns), client.HasLabels{v1alpha2.LabelNodePlacement}); err != nil {
		t.Fatal(err)
	}
	return ops.Items
}

// TestPlacementChangeMigrates: a running VM whose node still fits a new nodeSelector stays;
// one whose node no longer does is moved by an Evict operation named nodeplacement-update-*
// (Deckhouse's), and while no node fits, its status says so and nothing is started.
func TestPlacementChangeMigrates(t *testing.T) {
	ns := newNamespace(t)
	a, b := migrationNodes(t, ns)
	labelNode(t, a, "group", "green")
	labelNode(t, b, "group", "blue")
	source := runningVM(t, ns, a)

	// Still fits: nothing happens.
	editVM(t, ns, "m", func(vm *v1alpha2.VirtualMachine) {
		vm.Spec.NodeSelector = map[string]string{"group": "green"}
	})
	eventually(t, timeout, "the change observed", func() (bool, string) {
		vm := getVM(t, ns, "m")
		return vm.Status.ObservedGeneration == vm.Generation, ""
	})
	if ops := placementOps(t, ns); len(ops) != 0 {
		t.Fatalf("a VM whose node fits was moved: %s", ops[0].Name)
	}

	// No node fits: said, nothing started.
	editVM(t, ns, "m", func(vm *v1alpha2.VirtualMachine) {
		vm.Spec.NodeSelector = map[string]string{"group": "red"}
	})
	vm := waitCondition(t, ns, "m", v1alpha2.VMConditionConfigurationApplied, metav1.ConditionFalse, v1alpha2.ReasonPlacementUnsatisfiable)
	c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionConfigurationApplied)
	if !strings.Contains(c.Message, "node "+a+" does not match") || !strings.Contains(c.Message, b+" does not match") {
		t.Errorf("message %q", c.Message)
	}
	if ops := placementOps(t, ns); len(ops) != 0 {
		t.Fatalf("a migration was started with no node to go to: %s", ops[0].Name)
	}
	if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionAwaitingRestart); c != nil {
		t.Errorf("a placement change awaits a restart: %+v", c)
	}

	// Another node fits: the VM moves there by live migration.
	editVM(t, ns, "m", func(vm *v1alpha2.VirtualMachine) {
		vm.Spec.NodeSelector = map[string]string{"group": "blue"}
	})
	var op v1alpha2.VirtualMachineOperation
	eventually(t, timeout, "a placement migration", func() (bool, string) {
		ops := placementOps(t, ns)
		if len(ops) == 1 {
			op = ops[0]
		}
		return len(ops) == 1, fmt.Sprintf("%d operations", len(ops))
	})
	if !strings.HasPrefix(op.Name, "nodeplacement-update-") || op.Spec.Type != v1alpha2.OpEvict || op.Labels[v1alpha2.LabelNodePlacement] != a {
		t.Errorf("operation %s %s %v", op.Name, op.Spec.Type, op.Labels)
	}
	vm = waitCondition(t, ns, "m", v1alpha2.VMConditionConfigurationApplied, metav1.ConditionFalse, v1alpha2.ReasonPlacementNotMatched)
	var target corev1.Pod
	eventually(t, timeout, "a migration target pod", func() (bool, string) {
		for _, p := range livePods(t, ns, "m") {
			if _, ok := p.Labels[v1alpha2.LabelMigrationTarget]; ok {
				target = p
				return true, ""
			}
		}
		return false, "none"
	})
	if target.Spec.NodeSelector["group"] != "blue" {
		t.Errorf("target's nodeSelector %v", target.Spec.NodeSelector)
	}
	if target.Annotations[v1alpha2.AnnotationAppliedSpec] == "" || target.Annotations[v1alpha2.AnnotationAppliedSpec] != source.Annotations[v1alpha2.AnnotationAppliedSpec] {
		t.Errorf("the target does not record the spec the source runs")
	}
	eventually(t, timeout, "the VM's Migrating condition", func() (bool, string) {
		c := meta.FindStatusCondition(getVM(t, ns, "m").Status.Conditions, v1alpha2.VMConditionMigrating)
		return c != nil, "none"
	})
	finishMigration(t, &op, &source, &target, b, false)
	eventually(t, timeout, "the VM on node "+b+" with its placement applied", func() (bool, string) {
		vm := getVM(t, ns, "m")
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionConfigurationApplied)
		return vm.Status.NodeName == b && vm.Status.Phase == v1alpha2.MachineRunning && c == nil, fmt.Sprintf("%s on %s: %+v", vm.Status.Phase, vm.Status.NodeName, c)
	})
	if ops := placementOps(t, ns); len(ops) != 1 {
		t.Errorf("%d placement operations", len(ops))
	}
}

// TestRefusedPodIsShown: a launcher pod that admission refuses (here: a priorityClassName
// naming no PriorityClass) leaves the VM Pending with the refusal in its Running condition.
func TestRefusedPodIsShown(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	vm := newVM(ns, "m", "root", "")
	vm.Spec.PriorityClassName = "no-such-class"
	if err := k8s.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	got := waitCondition(t, ns, "m", v1alpha2.VMConditionRunning, metav1.ConditionFalse, "PodNotCreated")
	if c := meta.FindStatusCondition(got.Status.Conditions, v1alpha2.VMConditionRunning); !strings.Contains(c.Message, "no-such-class") {
		t.Errorf("message %q", c.Message)
	}
	if got.Status.Phase != v1alpha2.MachinePending {
		t.Errorf("phase %s", got.Status.Phase)
	}
}

// TestMachineFieldsRefused: what the apiserver refuses, with Deckhouse's messages where it
// has them.
func TestMachineFieldsRefused(t *testing.T) {
	ns := newNamespace(t)
	for _, tc := range []struct {
		name string
		edit func(*v1alpha2.VirtualMachine)
		say  string
	}{
		{"coreFraction Auto", func(vm *v1alpha2.VirtualMachine) { vm.Spec.CPU.CoreFraction = "Auto" }, "coreFraction Auto needs the Vertical VirtualMachine Autoscaler"},
		{"coreFraction 0%", func(vm *v1alpha2.VirtualMachine) { vm.Spec.CPU.CoreFraction = "0%" }, "spec.cpu.coreFraction"},
		{"Legacy with EFI", func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.OSType, vm.Spec.Bootloader = v1alpha2.OSLegacy, v1alpha2.BootEFI
		},
			"The Legacy osType requires the BIOS bootloader."},
		{"Legacy with 5 IDE devices", func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.OSType, vm.Spec.EnableParavirtualization = v1alpha2.OSLegacy, ptr.To(false)
			for i := 0; i < 4; i++ {
				vm.Spec.BlockDeviceRefs = append(vm.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.DiskDevice, Name: fmt.Sprintf("d%d", i)})
			}
		}, "at most 4 block devices"},
		{"same bootOrder twice", func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.BlockDeviceRefs[0].BootOrder = ptr.To(1)
			vm.Spec.BlockDeviceRefs = append(vm.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.DiskDevice, Name: "other", BootOrder: ptr.To(1)})
		}, "must not give two devices the same bootOrder"},
		{"unknown restartApprovalMode", func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.Disruptions = &v1alpha2.Disruptions{RestartApprovalMode: "Sometimes"}
		}, "restartApprovalMode"},
	} {
		vm := newVM(ns, "bad", "root", "")
		tc.edit(vm)
		err := k8s.Create(ctx, vm)
		if err == nil || !strings.Contains(err.Error(), tc.say) {
			t.Errorf("%s: %v, want it refused saying %q", tc.name, err, tc.say)
			_ = k8s.Delete(ctx, vm)
		}
	}
	// Deckhouse's defaults.
	if err := k8s.Create(ctx, newVM(ns, "good", "root", "")); err != nil {
		t.Fatal(err)
	}
	vm := getVM(t, ns, "good")
	if vm.Spec.OSType != v1alpha2.OSGeneric || vm.Spec.Bootloader != v1alpha2.BootBIOS || vm.Spec.EnableParavirtualization == nil || !*vm.Spec.EnableParavirtualization ||
		vm.Spec.Disruptions == nil || vm.Spec.Disruptions.RestartApprovalMode != v1alpha2.RestartManual {
		t.Errorf("defaults: osType %q bootloader %q paravirtualization %v disruptions %+v", vm.Spec.OSType, vm.Spec.Bootloader, vm.Spec.EnableParavirtualization, vm.Spec.Disruptions)
	}
}
