package vm

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/kubernetes/pkg/apis/core"
	corev1defaults "k8s.io/kubernetes/pkg/apis/core/v1"
	"k8s.io/kubernetes/pkg/apis/core/v1/helper/qos"
	"k8s.io/kubernetes/pkg/apis/core/validation"
	"k8s.io/kubernetes/pkg/capabilities"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestLauncherPodPullsIfNotPresent: a launcher pod names its pull policy, so that neither
// a :latest tag nor a missing one makes the kubelet pull at every VM start (and fail on a
// node that reaches no registry but has the image).
func TestLauncherPodPullsIfNotPresent(t *testing.T) {
	vm := &v1alpha2.VirtualMachine{}
	vm.Name, vm.Namespace = "v", "default"
	for _, image := range []string{"ferryvm/ferry:0.2.0", "ferryvm/ferry:latest", "ferryvm/ferry"} {
		pod := launcherPod(vm, nil, image, 1, nil, NodeSide{}, podDevices{})
		for _, c := range pod.Spec.Containers {
			if c.Image != image || c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("image %s: container %s has image %s, pull policy %q, want %s", image, c.Name, c.Image, c.ImagePullPolicy, corev1.PullIfNotPresent)
			}
		}
	}
}

func sizedVM(cores int, fraction, memory string) *v1alpha2.VirtualMachine {
	vm := &v1alpha2.VirtualMachine{}
	vm.Name, vm.Namespace = "v", "default"
	vm.Spec.CPU.Cores, vm.Spec.CPU.CoreFraction = cores, fraction
	vm.Spec.Memory.Size = resource.MustParse(memory)
	return vm
}

var testNIC = &podNIC{Address: "10.66.10.5/24", Gateway: "10.66.10.1"}

// TestLauncherPodLimits: limits are the VM's size (its whole cores; its memory and QEMU's
// overhead, as requested, with TCG's translation cache unless the pod has KVM), so a VM at
// coreFraction 100% is a Guaranteed pod, in either device mode.
func TestLauncherPodLimits(t *testing.T) {
	for _, tc := range []struct {
		cores    int
		fraction string
		cpuReq   string
		qos      corev1.PodQOSClass
	}{
		{2, "100%", "2", corev1.PodQOSGuaranteed},
		{2, "", "2", corev1.PodQOSGuaranteed},
		{2, "50%", "1", corev1.PodQOSBurstable},
		{1, "5%", "50m", corev1.PodQOSBurstable},
	} {
		for dev, mem := range map[podDevices]string{
			{}:                        "1280Mi", // 1 GiB, launcherOverhead and the TCG cache
			{plugin: true}:            "1280Mi",
			{plugin: true, kvm: true}: "1152Mi", // no TCG
		} {
			pod := launcherPod(sizedVM(tc.cores, tc.fraction, "1Gi"), nil, "ferryvm/ferry:0.2.0", 1, testNIC, NodeSide{}, dev)
			r := pod.Spec.Containers[0].Resources
			want := func(l corev1.ResourceList, name corev1.ResourceName, v string) {
				t.Helper()
				if q, ok := l[name]; !ok || q.Cmp(resource.MustParse(v)) != 0 {
					t.Errorf("%d cores at %q, %+v: %s %s, want %s", tc.cores, tc.fraction, dev, name, q.String(), v)
				}
			}
			want(r.Requests, corev1.ResourceCPU, tc.cpuReq)
			want(r.Limits, corev1.ResourceCPU, resource.NewQuantity(int64(tc.cores), resource.DecimalSI).String())
			want(r.Requests, corev1.ResourceMemory, mem)
			want(r.Limits, corev1.ResourceMemory, mem)
			if got := qos.ComputePodQOS(pod); got != tc.qos {
				t.Errorf("%d cores at %q, %+v: QoS %s, want %s", tc.cores, tc.fraction, dev, got, tc.qos)
			}
		}
	}
}

// TestLauncherPodPrivileged: without the device plugin (Ferry's stand-in kubelet) the
// container is privileged and requests no device.
func TestLauncherPodPrivileged(t *testing.T) {
	pod := launcherPod(sizedVM(1, "", "256Mi"), nil, "ferryvm/ferry:0.2.0", 1, testNIC, NodeSide{}, podDevices{})
	c := pod.Spec.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Errorf("security context %+v, want privileged", sc)
	}
	if !pod.Spec.HostNetwork {
		t.Error("a VM with a NIC: the pod is not on the node's network")
	}
	for _, l := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		for _, name := range []corev1.ResourceName{v1alpha2.ResourceTun, v1alpha2.ResourceKVM} {
			if _, ok := l[name]; ok {
				t.Errorf("a privileged pod requests %s", name)
			}
		}
	}
}

// TestLauncherPodByDevicePlugin: with the device plugin the container is unprivileged,
// requests tun for a NIC and kvm when told, and keeps only the capabilities its NIC needs.
func TestLauncherPodByDevicePlugin(t *testing.T) {
	for _, tc := range []struct {
		name      string
		nic       *podNIC
		kvm       bool
		resources []corev1.ResourceName
		caps      []corev1.Capability
	}{
		{"NIC and KVM", testNIC, true, []corev1.ResourceName{v1alpha2.ResourceTun, v1alpha2.ResourceKVM}, []corev1.Capability{"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}},
		{"NIC, TCG", testNIC, false, []corev1.ResourceName{v1alpha2.ResourceTun}, []corev1.Capability{"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}},
		{"no NIC, KVM", nil, true, []corev1.ResourceName{v1alpha2.ResourceKVM}, nil},
		{"no NIC, TCG", nil, false, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := launcherPod(sizedVM(1, "", "256Mi"), nil, "ferryvm/ferry:0.2.0", 1, tc.nic, NodeSide{}, podDevices{plugin: true, kvm: tc.kvm})
			c := pod.Spec.Containers[0]
			sc := c.SecurityContext
			if sc == nil || sc.Privileged != nil && *sc.Privileged {
				t.Fatalf("security context %+v, want unprivileged", sc)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation is not false")
			}
			if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("seccomp %+v, want RuntimeDefault", sc.SeccompProfile)
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, tc.caps) {
				t.Errorf("capabilities %+v, want all dropped, %v added", sc.Capabilities, tc.caps)
			}
			if pod.Spec.HostNetwork != (tc.nic != nil) {
				t.Errorf("hostNetwork %v with NIC %v", pod.Spec.HostNetwork, tc.nic)
			}
			for _, name := range []corev1.ResourceName{v1alpha2.ResourceTun, v1alpha2.ResourceKVM} {
				want := slices.Contains(tc.resources, name)
				for what, l := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
					q, ok := l[name]
					if ok != want || ok && q.Value() != 1 {
						t.Errorf("%s %s: %s (present %v), want present %v, 1", what, name, q.String(), ok, want)
					}
				}
			}
		})
	}
}

// TestLauncherDevices: which pods request KVM. Auto goes by the nodes: a schedulable one
// that offers it.
func TestLauncherDevices(t *testing.T) {
	node := func(name string, kvm string, unschedulable bool) *corev1.Node {
		n := &corev1.Node{}
		n.Name = name
		n.Spec.Unschedulable = unschedulable
		n.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4")}
		if kvm != "" {
			n.Status.Allocatable[v1alpha2.ResourceKVM] = resource.MustParse(kvm)
		}
		return n
	}
	tcg, withKVM := node("tcg", "", false), node("kvm", "110", false)
	cordoned, exhausted := node("cordoned", "110", true), node("zero", "0", false)
	for _, tc := range []struct {
		name  string
		dev   Devices
		nodes []client.Object
		want  podDevices
	}{
		{"privileged", Devices{}, []client.Object{withKVM}, podDevices{}},
		{"privileged ignores KVM settings", Devices{KVM: KVMRequire}, nil, podDevices{}},
		{"auto, a KVM node", Devices{Plugin: true}, []client.Object{tcg, withKVM}, podDevices{plugin: true, kvm: true}},
		{"auto, no KVM node", Devices{Plugin: true, KVM: KVMAuto}, []client.Object{tcg}, podDevices{plugin: true}},
		{"auto, KVM only where not schedulable or none left", Devices{Plugin: true}, []client.Object{tcg, cordoned, exhausted}, podDevices{plugin: true}},
		{"require, no KVM node", Devices{Plugin: true, KVM: KVMRequire}, []client.Object{tcg}, podDevices{plugin: true, kvm: true}},
		{"off, a KVM node", Devices{Plugin: true, KVM: KVMOff}, []client.Object{withKVM}, podDevices{plugin: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := runtime.NewScheme()
			_ = clientgoscheme.AddToScheme(s)
			r := &Reconciler{Client: fake.NewClientBuilder().WithScheme(s).WithObjects(tc.nodes...).Build(), Devices: tc.dev}
			got, err := r.launcherDevices(context.Background())
			if err != nil || got != tc.want {
				t.Errorf("launcherDevices: %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestLauncherPodsAreValid: both kinds of launcher pod pass the apiserver's validation of a
// new pod (extended resources with limits equal to requests, capabilities, seccomp).
func TestLauncherPodsAreValid(t *testing.T) {
	// As Ferry's apiserver (and any that runs privileged pods) allows.
	capabilities.Initialize(capabilities.Capabilities{AllowPrivileged: true})
	vm := sizedVM(2, "50%", "1Gi")
	vm.UID = "00000000-0000-0000-0000-000000000002"
	for _, dev := range []podDevices{{}, {plugin: true}, {plugin: true, kvm: true}} {
		for _, nic := range []*podNIC{nil, testNIC} {
			pod := launcherPod(vm, []attachedDisk{{Path: "/var/lib/ferry/storage/d.qcow2", Format: "qcow2"}},
				"ferryvm/ferry:0.2.0", 1, nic, NodeSide{StateDir: "/var/lib/ferry/node", StorageDir: "/var/lib/ferry/storage", MigrationTLS: true}, dev)
			pod.Name = pod.GenerateName + "x"
			pod.UID = "00000000-0000-0000-0000-000000000001"
			corev1defaults.SetObjectDefaults_Pod(pod)
			var internal core.Pod
			if err := corev1defaults.Convert_v1_Pod_To_core_Pod(pod, &internal, nil); err != nil {
				t.Fatal(err)
			}
			if errs := validation.ValidatePodCreate(&internal, validation.PodValidationOptions{}); len(errs) > 0 {
				t.Errorf("%+v, NIC %v: %v", dev, nic != nil, errs.ToAggregate())
			}
		}
	}
}
