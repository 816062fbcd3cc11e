package vm

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/migrationtls"
)

// launcherOverhead is the memory a launcher needs beyond the guest's RAM: QEMU's own
// code and buffers (measured: an idle 128 MiB guest's QEMU has ~200 MiB RSS).
var launcherOverhead = resource.MustParse("128Mi")

// tcgOverhead is what QEMU needs beyond that when it runs the guest without KVM: TCG's
// translation cache (hypervisor.TCGCacheMiB), which fills as the guest runs.
var tcgOverhead = *resource.NewQuantity(hypervisor.TCGCacheMiB<<20, resource.BinarySI)

// attachedDisk is a disk the VM boots or reads, resolved to its file.
type attachedDisk struct {
	Path   string
	Format string
	CDROM  bool // a read-only CD-ROM (an ISO image, a provisioning seed)
	// BootIndex is the disk's place in the boot order (its reference's bootOrder; 0: none).
	BootIndex int
}

// launcherArg renders the launcher's --disk value.
func (d attachedDisk) launcherArg() string {
	arg := d.Path
	if d.Format != "" {
		arg += ":" + d.Format
	}
	if d.CDROM {
		arg += ":cdrom"
	}
	return arg + d.bootSuffix()
}

// podNIC is the VM's NIC as its launcher is told it.
type podNIC struct {
	Address string // 10.66.10.5/24: the VM's address, the range's prefix length
	Gateway string
	MAC     string // the NIC's MAC address (launcher flag --mac); "": the launcher derives one from the address
}

// LauncherPodPrefix starts every launcher pod's name.
const LauncherPodPrefix = "virt-launcher-"

// Devices says how launcher pods get the node's /dev/net/tun and /dev/kvm.
type Devices struct {
	// Plugin has launcher pods request the devices from the node agents' device plugin
	// (the extended resources v1alpha2.ResourceTun and ResourceKVM) and run unprivileged,
	// with only the capabilities the launcher uses. Off, they are privileged and see every
	// device of the node: Ferry's stand-in kubelet (`ferry up`) has no device plugins.
	Plugin bool
	// KVM is when a launcher pod requests /dev/kvm, with Plugin: KVMAuto ("" too),
	// KVMRequire or KVMOff. Its launcher runs QEMU under KVM when /dev/kvm opens in its
	// container, else under TCG.
	KVM string
}

// Devices.KVM values.
const (
	// KVMAuto requests /dev/kvm while some schedulable node offers it: a cluster with KVM
	// runs its new VMs on its KVM nodes only, one without runs them under TCG anywhere.
	KVMAuto = "auto"
	// KVMRequire always requests it: a VM waits for a KVM node rather than run under TCG.
	KVMRequire = "require"
	// KVMOff never does: every VM runs under TCG (tests, nested setups without KVM).
	KVMOff = "off"
)

// podDevices is what one launcher pod gets: by device plugin or privileged, with KVM or not.
type podDevices struct {
	plugin bool
	kvm    bool
}

// launcherDevices decides how a new launcher pod gets its devices. With KVMAuto it reads
// the nodes (from the cache): KVM when a schedulable node offers it.
func (r *Reconciler) launcherDevices(ctx context.Context) (podDevices, error) {
	d := podDevices{plugin: r.Devices.Plugin}
	if !d.plugin {
		return d, nil
	}
	switch r.Devices.KVM {
	case KVMRequire:
		d.kvm = true
	case KVMOff:
	default:
		var nodes corev1.NodeList
		if err := r.Client.List(ctx, &nodes); err != nil {
			return d, err
		}
		d.kvm = slices.ContainsFunc(nodes.Items, func(n corev1.Node) bool {
			q, ok := n.Status.Allocatable[v1alpha2.ResourceKVM]
			return !n.Spec.Unschedulable && ok && q.Sign() > 0
		})
	}
	return d, nil
}

// launcherPod builds the pod that runs the VM: one container whose process is
// ferry-launcher, with the VM's placement, and requests and limits from its size.
// token is the VM's fencing token for this start: the launcher runs QEMU only while the
// disk lease holds no higher one.
// nic, when set, gives the VM a NIC with its address and MAC (launcher flags --ip,
// --gateway, --mac); the launcher then runs in the node's network namespace, where it
// routes the address.
// dev says how the container gets the node's devices (launcherDevices).
func launcherPod(vm *v1alpha2.VirtualMachine, disks []attachedDisk, image string, token int64, nic *podNIC, node NodeSide, dev podDevices) *corev1.Pod {
	cores := max(vm.Spec.CPU.Cores, 1)
	fraction := 100
	if f, err := strconv.Atoi(strings.TrimSuffix(vm.Spec.CPU.CoreFraction, "%")); err == nil && f > 0 {
		fraction = f
	}
	cpu := resource.NewMilliQuantity(int64(cores*fraction*10), resource.DecimalSI)
	mem := vm.Spec.Memory.Size.DeepCopy()
	mem.Add(launcherOverhead)
	if !dev.kvm {
		// TCG: certainly without /dev/kvm from the device plugin; possibly when privileged,
		// where the node's KVM decides.
		mem.Add(tcgOverhead)
	}
	// Limits are the VM's size: its memory and QEMU's overhead, as requested, and its whole
	// cores, which a coreFraction below 100% may use when the node has them spare. At 100%
	// requests equal limits and the pod is Guaranteed (never evicted before Burstable ones).
	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: *cpu, corev1.ResourceMemory: mem},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: *resource.NewQuantity(int64(cores), resource.DecimalSI), corev1.ResourceMemory: mem},
	}
	// QEMU opens /dev/kvm and a tap (/dev/net/tun), and the launcher routes the VM's address
	// on the node (CAP_NET_ADMIN in the node's network).
	security := &corev1.SecurityContext{Privileged: ptr.To(true)}
	if dev.plugin {
		security = unprivileged(nic != nil)
		one := *resource.NewQuantity(1, resource.DecimalSI)
		if nic != nil {
			res.Requests[v1alpha2.ResourceTun], res.Limits[v1alpha2.ResourceTun] = one, one
		}
		if dev.kvm {
			res.Requests[v1alpha2.ResourceKVM], res.Limits[v1alpha2.ResourceKVM] = one, one
		}
	}

	// The arguments of ferry-launcher, the container's command. Pods of releases before it
	// run `ferry launcher` with the same flags, which images and node agents still run.
	args := []string{
		"--vm", vm.Name,
		"--namespace", vm.Namespace,
		"--cpus", strconv.Itoa(cores),
		"--memory", vm.Spec.Memory.Size.String(),
	}
	for _, d := range disks {
		args = append(args, "--disk", d.launcherArg())
	}
	if token > 0 {
		args = append(args, "--fencing-token", strconv.FormatInt(token, 10))
	}
	if nic != nil {
		args = append(args, "--ip", nic.Address, "--gateway", nic.Gateway)
		if nic.MAC != "" {
			args = append(args, "--mac", nic.MAC)
		}
	}
	grace := ptr.Deref(vm.Spec.TerminationGracePeriodSeconds, 60)
	args = append(args, "--shutdown-grace", guestShutdownGrace(grace).String())
	args = append(args, machineArgs(vm, node.StorageDir)...)

	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    LauncherPodPrefix + vm.Name + "-",
			Namespace:       vm.Namespace,
			Labels:          podLabels(vm),
			Annotations:     map[string]string{v1alpha2.AnnotationAppliedSpec: appliedSpecOf(vm).encode()},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1alpha2.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			HostNetwork:                   nic != nil,
			TerminationGracePeriodSeconds: &grace,
			NodeSelector:                  vm.Spec.NodeSelector,
			Affinity:                      vm.Spec.Affinity.ForPod(),
			PriorityClassName:             vm.Spec.PriorityClassName,
			TopologySpreadConstraints:     v1alpha2.PodTopologySpreadConstraints(vm.Spec.TopologySpreadConstraints),
			Tolerations:                   append(slices.Clone(vm.Spec.Tolerations), stayOnUnreachable...),
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			// Ready only while the guest runs: the node agent sets the gate from the guest's
			// heartbeat.
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: v1alpha2.PodConditionGuestReady}},
			Containers: []corev1.Container{{
				Name:  "compute",
				Image: image,
				// The image is the controller's and the agent's, already on the node when
				// its agent runs: a tag that never moves needs no pull (and a node without a
				// registry can run it). The default would be Always for :latest or no tag.
				ImagePullPolicy:          corev1.PullIfNotPresent,
				Command:                  []string{"ferry-launcher"},
				Args:                     args,
				Env:                      node.env(),
				Resources:                res,
				VolumeMounts:             node.mounts(),
				TerminationMessagePath:   launcherRunDir + "/termination-message",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				SecurityContext:          security,
			}},
			Volumes: node.volumes(),
		},
	}
}

// unprivileged is a launcher container's security context when the device plugin gives it
// the devices: no capability but those a launcher with a NIC uses in the node's network
// (package vmnet): NET_ADMIN to create its tap (TUNSETIFF) and to route the VM's address
// (the tap's settings, routes, neighbour and proxy-ARP entries, by netlink), NET_RAW for
// the gratuitous ARPs that move the address to this node (a packet socket), and
// NET_BIND_SERVICE for its DHCP server (port 67). QEMU needs none: it gets the tap as a
// descriptor. The runtime's default seccomp profile; no privilege gained by exec.
func unprivileged(nic bool) *corev1.SecurityContext {
	caps := &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}
	if nic {
		caps.Add = []corev1.Capability{"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}
	}
	return &corev1.SecurityContext{
		Privileged:               ptr.To(false),
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             caps,
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// guestShutdownGrace is how long the launcher lets the guest power off when the pod's
// grace period is grace seconds: what is left once QEMU has had time to quit before the
// kubelet's SIGKILL.
func guestShutdownGrace(grace int64) time.Duration {
	total := time.Duration(grace) * time.Second
	return max(total-5*time.Second, total/2)
}

// NodeSide is where a node keeps what its agent and its launcher pods share, as host paths
// mounted into each launcher pod (a real kubelet mounts them; Ferry's own, under `ferry
// up`, runs launchers on the node's filesystem and tells them the node's paths).
type NodeSide struct {
	// StateDir is the node agent's --state-dir: pods/<pod UID> is a launcher's run
	// directory (sockets, serial log), migration-tls the node's migration certificate.
	StateDir string
	// StorageDir is the shared storage of images and disks, at the same path on every node.
	StorageDir string
	// MigrationTLS tells launchers to migrate only over TLS with the node's certificate.
	MigrationTLS bool
}

// Paths inside a launcher container.
const (
	launcherRunDir       = "/var/run/ferry/launcher"
	launcherMigrationTLS = "/var/run/ferry/migration-tls"
)

// env names where the mounts are and what the launcher must know of its pod and node.
func (n NodeSide) env() []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		{Name: "FERRY_RUN_DIR", Value: launcherRunDir},
		field("FERRY_POD_NAME", "metadata.name"),
		field("FERRY_POD_NAMESPACE", "metadata.namespace"),
		field("FERRY_POD_UID", "metadata.uid"),
		field("FERRY_NODE_NAME", "spec.nodeName"),
		field("FERRY_NODE_IP", "status.hostIP"),
	}
	if n.MigrationTLS && n.StateDir != "" {
		env = append(env, corev1.EnvVar{Name: migrationtls.EnvDir, Value: launcherMigrationTLS})
	}
	return env
}

// mounts and volumes leave out what NodeSide does not name (controller tests run no node).
func (n NodeSide) mounts() []corev1.VolumeMount {
	var m []corev1.VolumeMount
	if n.StateDir != "" {
		// The pod's own run directory, <state>/pods/<uid>, where the node agent finds it.
		m = append(m, corev1.VolumeMount{Name: "run", MountPath: launcherRunDir, SubPathExpr: "$(FERRY_POD_UID)"})
		if n.MigrationTLS {
			m = append(m, corev1.VolumeMount{Name: "migration-tls", MountPath: launcherMigrationTLS, ReadOnly: true})
		}
	}
	if n.StorageDir != "" {
		m = append(m, corev1.VolumeMount{Name: "storage", MountPath: n.StorageDir})
	}
	return m
}

func (n NodeSide) volumes() []corev1.Volume {
	host := func(name, path string, t corev1.HostPathType) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &t}}}
	}
	var v []corev1.Volume
	if n.StateDir != "" {
		v = append(v, host("run", filepath.Join(n.StateDir, "pods"), corev1.HostPathDirectoryOrCreate))
		if n.MigrationTLS {
			v = append(v, host("migration-tls", filepath.Join(n.StateDir, migrationtls.DirName), corev1.HostPathDirectoryOrCreate))
		}
	}
	if n.StorageDir != "" {
		v = append(v, host("storage", n.StorageDir, corev1.HostPathDirectory))
	}
	return v
}

// preferNotOn makes the scheduler place the pod on another node than node if one fits: a
// VM restarted because its node was fenced should not go straight back to that node, which
// may rejoin at once and fail again.
func preferNotOn(pod *corev1.Pod, node string) {
	spec := &pod.Spec
	if spec.Affinity == nil {
		spec.Affinity = &corev1.Affinity{}
	} else {
		spec.Affinity = spec.Affinity.DeepCopy()
	}
	if spec.Affinity.NodeAffinity == nil {
		spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	na := spec.Affinity.NodeAffinity
	na.PreferredDuringSchedulingIgnoredDuringExecution = append(na.PreferredDuringSchedulingIgnoredDuringExecution,
		corev1.PreferredSchedulingTerm{Weight: 100, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
			{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpNotIn, Values: []string{node}},
		}}})
}

// stayOnUnreachable keeps a launcher pod bound to its node when the node stops answering:
// the node lifecycle controller would otherwise delete it after 5 minutes and the VM would
// be started a second time while the first may still run. Only fencing ends such a pod.
var stayOnUnreachable = []corev1.Toleration{
	{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
}

// podEnded tells whether a pod has finished, and how.
func podEnded(p *corev1.Pod) (podOutcome, bool) {
	switch p.Status.Phase {
	case corev1.PodSucceeded:
		return guestShutdown, true
	case corev1.PodFailed:
		if p.Status.Reason == v1alpha2.ReasonNodeFenced {
			return nodeFenced, true
		}
		return crashed, true
	}
	return 0, false
}
