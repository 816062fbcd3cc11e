package vm

import (
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
	"github.com/ferryvm/ferry/internal/migrationtls"
)

// launcherOverhead is the memory a launcher needs beyond the guest's RAM: QEMU's own
// code and buffers (measured: an idle 128 MiB guest's QEMU has ~200 MiB RSS).
var launcherOverhead = resource.MustParse("128Mi")

// attachedDisk is a disk the VM boots or reads, resolved to its file.
type attachedDisk struct {
	Path   string
	Format string
	CDROM  bool // a read-only CD-ROM (an ISO image, a provisioning seed)
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
	return arg
}

// podNIC is the VM's NIC as its launcher is told it.
type podNIC struct {
	Address string // 10.66.10.5/24: the VM's address, the range's prefix length
	Gateway string
}

// LauncherPodPrefix starts every launcher pod's name.
const LauncherPodPrefix = "virt-launcher-"

// launcherPod builds the pod that runs the VM: one container whose process is
// `ferry launcher`, with the VM's placement, and resource requests from its size.
// token is the VM's fencing token for this start: the launcher runs QEMU only while the
// disk lease holds no higher one.
// nic, when set, gives the VM a NIC with its address (launcher flags --ip, --gateway); the
// launcher then runs in the node's network namespace, where it routes the address.
func launcherPod(vm *v1alpha2.VirtualMachine, disks []attachedDisk, image string, token int64, nic *podNIC, node NodeSide) *corev1.Pod {
	cores := max(vm.Spec.CPU.Cores, 1)
	fraction := 100
	if f, err := strconv.Atoi(strings.TrimSuffix(vm.Spec.CPU.CoreFraction, "%")); err == nil && f > 0 {
		fraction = f
	}
	cpu := resource.NewMilliQuantity(int64(cores*fraction*10), resource.DecimalSI)
	mem := vm.Spec.Memory.Size.DeepCopy()
	mem.Add(launcherOverhead)

	args := []string{"launcher",
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
	}
	grace := ptr.Deref(vm.Spec.TerminationGracePeriodSeconds, 60)
	args = append(args, "--shutdown-grace", guestShutdownGrace(grace).String())

	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: LauncherPodPrefix + vm.Name + "-",
			Namespace:    vm.Namespace,
			Labels: map[string]string{
				v1alpha2.LabelVMName:   vm.Name,
				v1alpha2.LabelLauncher: "virt-launcher",
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1alpha2.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			HostNetwork:                   nic != nil,
			TerminationGracePeriodSeconds: &grace,
			NodeSelector:                  vm.Spec.NodeSelector,
			Affinity:                      vm.Spec.Affinity,
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
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{"ferry"},
				Args:            args,
				Env:             node.env(),
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: *cpu, corev1.ResourceMemory: mem},
				},
				VolumeMounts:             node.mounts(),
				TerminationMessagePath:   launcherRunDir + "/termination-message",
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				// QEMU opens /dev/kvm and a tap (/dev/net/tun), and the launcher routes the
				// VM's address on the node (CAP_NET_ADMIN in the node's network).
				SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
			}},
			Volumes: node.volumes(),
		},
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
