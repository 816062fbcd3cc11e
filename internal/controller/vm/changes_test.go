package vm

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func baseVM() *v1alpha2.VirtualMachine {
	return &v1alpha2.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: "v", Namespace: "ns", UID: "uid-1", Labels: map[string]string{"app": "db"}},
		Spec: v1alpha2.VirtualMachineSpec{
			CPU:             v1alpha2.CPUSpec{Cores: 1},
			Memory:          v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
			BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: "root"}},
		},
	}
}

// TestRestartChanges: which edits of a running VM's spec await a restart, in Deckhouse's
// shape; what applies live (runPolicy, placement, disruptions) is never listed.
func TestRestartChanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*v1alpha2.VirtualMachine)
		want string // JSON of the changes
	}{
		{name: "nothing", edit: func(*v1alpha2.VirtualMachine) {}, want: `null`},
		{name: "defaults spelled out", edit: func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.OSType, vm.Spec.Bootloader, vm.Spec.CPU.CoreFraction = v1alpha2.OSGeneric, v1alpha2.BootBIOS, "100%"
			vm.Spec.EnableParavirtualization, vm.Spec.TerminationGracePeriodSeconds = ptr.To(true), ptr.To(int64(60))
		}, want: `null`},
		{name: "live fields", edit: func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.RunPolicy, vm.Spec.LiveMigrationPolicy = v1alpha2.AlwaysOn, v1alpha2.AlwaysForced
			vm.Spec.Disruptions = &v1alpha2.Disruptions{RestartApprovalMode: v1alpha2.RestartAutomatic}
			vm.Spec.NodeSelector = map[string]string{"a": "b"}
			vm.Spec.Tolerations = []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists}}
			vm.Spec.Affinity = &v1alpha2.VirtualMachineAffinity{NodeAffinity: &corev1.NodeAffinity{}}
			vm.Labels = map[string]string{"x": "y"}
		}, want: `null`},
		{name: "cores", edit: func(vm *v1alpha2.VirtualMachine) { vm.Spec.CPU.Cores = 2 },
			want: `[{"operation":"replace","path":"cpu.cores","currentValue":1,"desiredValue":2}]`},
		{name: "cores and fraction", edit: func(vm *v1alpha2.VirtualMachine) { vm.Spec.CPU = v1alpha2.CPUSpec{Cores: 2, CoreFraction: "50%"} },
			want: `[{"operation":"replace","path":"cpu","currentValue":{"cores":1,"coreFraction":"100%"},"desiredValue":{"cores":2,"coreFraction":"50%"}}]`},
		{name: "memory", edit: func(vm *v1alpha2.VirtualMachine) { vm.Spec.Memory.Size = resource.MustParse("256Mi") },
			want: `[{"operation":"replace","path":"memory.size","currentValue":"128Mi","desiredValue":"256Mi"}]`},
		{name: "memory spelled otherwise", edit: func(vm *v1alpha2.VirtualMachine) { vm.Spec.Memory.Size = resource.MustParse("131072Ki") }, want: `null`},
		{name: "machine", edit: func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.OSType, vm.Spec.Bootloader, vm.Spec.EnableParavirtualization = v1alpha2.OSWindows, v1alpha2.BootEFI, ptr.To(false)
		}, want: `[{"operation":"replace","path":"enableParavirtualization","currentValue":true,"desiredValue":false},` +
			`{"operation":"replace","path":"osType","currentValue":"Generic","desiredValue":"Windows"},` +
			`{"operation":"replace","path":"bootloader","currentValue":"BIOS","desiredValue":"EFI"}]`},
		{name: "disk added and boot order", edit: func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.BlockDeviceRefs[0].BootOrder = ptr.To(2)
			vm.Spec.BlockDeviceRefs = append(vm.Spec.BlockDeviceRefs, v1alpha2.BlockDeviceRef{Kind: v1alpha2.ClusterImageDevice, Name: "iso", BootOrder: ptr.To(1)})
		}, want: `[{"operation":"replace","path":"blockDeviceRefs.0","currentValue":{"kind":"VirtualDisk","name":"root"},"desiredValue":{"kind":"VirtualDisk","name":"root","bootOrder":2}},` +
			`{"operation":"add","path":"blockDeviceRefs.1","desiredValue":{"kind":"ClusterVirtualImage","name":"iso","bootOrder":1}}]`},
		{name: "pod placement that needs a new pod", edit: func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.PriorityClassName = "high"
			vm.Spec.TopologySpreadConstraints = []v1alpha2.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: corev1.DoNotSchedule}}
		}, want: `[{"operation":"add","path":"topologySpreadConstraints","desiredValue":[{"maxSkew":1,"topologyKey":"zone","whenUnsatisfiable":"DoNotSchedule"}]},` +
			`{"operation":"add","path":"priorityClassName","desiredValue":"high"}]`},
		{name: "class", edit: func(vm *v1alpha2.VirtualMachine) { vm.Spec.VirtualMachineClassName = "generic" },
			want: `[{"operation":"add","path":"virtualMachineClassName","desiredValue":"generic"}]`},
		{name: "provisioning added", edit: func(vm *v1alpha2.VirtualMachine) {
			vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserData, UserData: "#cloud-config"}
		}, want: `[{"operation":"add","path":"provisioning","desiredValue":{"type":"UserData","userData":"#cloud-config"}}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := baseVM()
			cur := appliedSpecOf(vm)
			tc.edit(vm)
			got, _ := json.Marshal(restartChanges(cur, appliedSpecOf(vm)))
			if string(got) != tc.want {
				t.Errorf("changes\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestCloudInitRemovalNeedsNoRestart: the guest read its cloud-init data at boot.
func TestCloudInitRemovalNeedsNoRestart(t *testing.T) {
	vm := baseVM()
	vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserData, UserData: "#cloud-config"}
	cur := appliedSpecOf(vm)
	vm.Spec.Provisioning = nil
	if c := restartChanges(cur, appliedSpecOf(vm)); len(c) != 0 {
		t.Errorf("changes %+v", c)
	}
}

// TestLauncherPodCarriesTheMachine: the fields reach the pod and the launcher's arguments.
func TestLauncherPodCarriesTheMachine(t *testing.T) {
	vm := baseVM()
	vm.Labels["virtualization.ferryvm.io/migration-target"] = "forged"
	vm.Spec.OSType, vm.Spec.Bootloader, vm.Spec.EnableParavirtualization = v1alpha2.OSWindows, v1alpha2.BootEFIWithSecureBoot, ptr.To(false)
	vm.Spec.PriorityClassName = "vm-high"
	vm.Spec.TopologySpreadConstraints = []v1alpha2.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
		WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}}
	term := corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname", LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}
	vm.Spec.Affinity = &v1alpha2.VirtualMachineAffinity{
		VirtualMachineAndPodAntiAffinity: &v1alpha2.VirtualMachineAndPodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{term}},
		VirtualMachineAndPodAffinity: &v1alpha2.VirtualMachineAndPodAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []v1alpha2.WeightedVirtualMachineAndPodAffinityTerm{
			{Weight: 10, VirtualMachineAndPodAffinityTerm: term}}},
		PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{term}},
	}
	disks := []attachedDisk{{Path: "/s/root.qcow2", Format: "qcow2", BootIndex: 2}, {Path: "/s/seed.iso", Format: "raw", CDROM: true}}
	pod := launcherPod(vm, disks, "img", 1, nil, NodeSide{StorageDir: "/s"}, podDevices{})
	args := strings.Join(pod.Spec.Containers[0].Args, " ")
	for _, want := range []string{"--disk /s/root.qcow2:qcow2:boot=2 ", "--disk /s/seed.iso:raw:cdrom ", "--os-type Windows", "--bootloader EFIWithSecureBoot",
		"--efi-vars /s/firmware/ns/uid-1-secureboot.fd", "--paravirtualization=false"} {
		if !strings.Contains(args+" ", want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if pod.Spec.PriorityClassName != "vm-high" || len(pod.Spec.TopologySpreadConstraints) != 1 || pod.Spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels["app"] != "db" {
		t.Errorf("priority %q, spread %+v", pod.Spec.PriorityClassName, pod.Spec.TopologySpreadConstraints)
	}
	a := pod.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 ||
		a.PodAffinity == nil || len(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 1 || len(a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].Weight != 10 {
		t.Errorf("affinity %+v", a)
	}
	if pod.Labels["app"] != "db" || pod.Labels[v1alpha2.LabelVMName] != "v" {
		t.Errorf("labels %v", pod.Labels)
	}
	if _, forged := pod.Labels["virtualization.ferryvm.io/migration-target"]; forged {
		t.Errorf("a VM label of Ferry's reached the pod: %v", pod.Labels)
	}
	if applied, ok := podAppliedSpec(pod); !ok || applied.Bootloader != v1alpha2.BootEFIWithSecureBoot || applied.EnableParavirtualization {
		t.Errorf("applied spec %+v %v", applied, ok)
	}
}

// TestNoChangeFromEncoding: what a pod records comes back from JSON; an empty list in the
// VM's spec and none in the record are no change (else an Automatic VM would restart for
// ever).
func TestNoChangeFromEncoding(t *testing.T) {
	vm := baseVM()
	vm.Spec.TopologySpreadConstraints = []v1alpha2.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: corev1.DoNotSchedule,
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{}, MatchExpressions: []metav1.LabelSelectorRequirement{}}}}
	vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserData, UserData: "#cloud-config"}
	pod := launcherPod(vm, nil, "img", 1, nil, NodeSide{}, podDevices{})
	recorded, ok := podAppliedSpec(pod)
	if !ok {
		t.Fatal("no applied spec")
	}
	if c := restartChanges(recorded, appliedSpecOf(vm)); len(c) != 0 {
		t.Errorf("changes %+v", c)
	}
	if strings.Contains(pod.Annotations[v1alpha2.AnnotationAppliedSpec], "cloud-config") {
		t.Errorf("the pod records the user-data: %s", pod.Annotations[v1alpha2.AnnotationAppliedSpec])
	}
	vm.Spec.Provisioning.UserData = "#cloud-config\npassword: x"
	got, _ := json.Marshal(restartChanges(recorded, appliedSpecOf(vm)))
	if want := `[{"operation":"replace","path":"provisioning","currentValue":{"type":"UserData"},"desiredValue":{"type":"UserData","userData":"#cloud-config\npassword: x"}}]`; string(got) != want {
		t.Errorf("changes\n got %s\nwant %s", got, want)
	}
}

// TestAddressChanges: a running VM given another vmip (the guide's way to give an existing
// VM a static address) or another legacy address lists the change; the same one, or none
// asked for (its own Auto vmip), lists nothing.
func TestAddressChanges(t *testing.T) {
	vm := &v1alpha2.VirtualMachine{}
	vm.Status.VirtualMachineIPAddressName, vm.Status.IPAddress = "linux-vm-x7k2p", "10.66.10.5"
	if got := addressChanges(vm); len(got) != 0 {
		t.Errorf("no address asked for: %+v", got)
	}
	vm.Spec.VirtualMachineIPAddressName = "linux-vm-custom-ip"
	got := addressChanges(vm)
	if len(got) != 1 || got[0].Path != "virtualMachineIPAddressName" || got[0].Operation != opReplace ||
		got[0].CurrentValue != "linux-vm-x7k2p" || got[0].DesiredValue != "linux-vm-custom-ip" {
		t.Errorf("another vmip: %+v", got)
	}
	vm.Status.VirtualMachineIPAddressName = "linux-vm-custom-ip"
	if got := addressChanges(vm); len(got) != 0 {
		t.Errorf("the vmip it holds: %+v", got)
	}
	vm.Spec.VirtualMachineIPAddressName, vm.Spec.VirtualMachineIPAddress = "", "10.66.10.9"
	if got := addressChanges(vm); len(got) != 1 || got[0].Path != "virtualMachineIPAddress" {
		t.Errorf("another legacy address: %+v", got)
	}
}
