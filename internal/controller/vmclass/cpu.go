package vmclass

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// CPUConfig is the processor a class gives its VMs' QEMU. It is comparable (==): the CPU a
// running VM's pod was built with against its class's current one tells whether a restart
// would change it.
type CPUConfig struct {
	// Model is QEMU's CPU model: hypervisor.HostModel for Host and HostPassthrough, the
	// class's model for Model, hypervisor.BaseModel under the features of Features and
	// Discovery.
	Model string
	// Features are the features required on top of Model, sorted, comma-separated ("": none).
	Features string
}

// CPUOf is the CPU of class's VMs. A Discovery class whose features were not discovered yet
// has none: the error says so, and its VMs wait (their class is not Ready).
func CPUOf(class *v1alpha2.VirtualMachineClass) (CPUConfig, error) {
	c := class.Spec.CPU
	switch c.Type {
	case v1alpha2.CPUTypeHost, v1alpha2.CPUTypeHostPassthrough:
		// QEMU without libvirt has no host-model: -cpu host (with QEMU's default
		// migratable=on, which leaves out what cannot migrate) serves both.
		return CPUConfig{Model: hypervisor.HostModel}, nil
	case v1alpha2.CPUTypeModel:
		return CPUConfig{Model: c.Model}, nil
	case v1alpha2.CPUTypeFeatures:
		return CPUConfig{Model: hypervisor.BaseModel, Features: featureList(c.Features)}, nil
	case v1alpha2.CPUTypeDiscovery:
		if len(class.Status.CPUFeatures.Enabled) == 0 {
			return CPUConfig{}, fmt.Errorf("the CPU features of Discovery class %q are not discovered yet", class.Name)
		}
		return CPUConfig{Model: hypervisor.BaseModel, Features: featureList(class.Status.CPUFeatures.Enabled)}, nil
	}
	return CPUConfig{}, fmt.Errorf("class %q has CPU type %q, which Ferry does not know", class.Name, c.Type)
}

func featureList(f []string) string {
	s := slices.Clone(f)
	slices.Sort(s)
	return strings.Join(slices.Compact(s), ",")
}

// Launcher flags that carry a CPUConfig (launcher.Flags parses them).
const (
	FlagCPUModel    = "--cpu-model"
	FlagCPUFeatures = "--cpu-features"
)

// LauncherArgs are the launcher's flags for c.
func (c CPUConfig) LauncherArgs() []string {
	if c.Model == "" {
		return nil
	}
	args := []string{FlagCPUModel, c.Model}
	if c.Features != "" {
		args = append(args, FlagCPUFeatures, c.Features)
	}
	return args
}

// PodCPU is the CPU a launcher pod's QEMU was given (its container's arguments, as
// LauncherArgs wrote them). Compared with CPUOf of the VM's class now, it tells whether a
// restart would change the guest's CPU (the zero CPUConfig: the pod predates classes).
func PodCPU(pod *corev1.Pod) CPUConfig {
	var c CPUConfig
	if len(pod.Spec.Containers) == 0 {
		return c
	}
	args := pod.Spec.Containers[0].Args
	for i := 0; i < len(args); i++ {
		flag, value, inline := strings.Cut(args[i], "=")
		if !inline && i+1 < len(args) {
			value = args[i+1]
		}
		switch flag {
		case FlagCPUModel:
			c.Model = value
		case FlagCPUFeatures:
			c.Features = value
		default:
			continue
		}
		if !inline {
			i++
		}
	}
	return c
}
