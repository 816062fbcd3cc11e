package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/launcher"
)

// Where console and vnc run the launcher's relay (--transport).
const (
	relayAuto  = "auto"
	relayLocal = "local"
	relayExec  = "exec"
)

// relays opens relays to the sockets of a VM's QEMU (launcher.Relay): in this process
// when the launcher pod's run directory is on this machine (`ferry up`'s stand-in kubelet,
// which names it in the pod's run-dir annotation, and serves no exec), else through the
// Kubernetes API: pods/exec of `ferry-launcher console|vnc` in the launcher pod, as a real
// kubelet serves it. auto takes the first that applies.
type relays struct {
	c    client.Client
	exec interface {
		run(ctx context.Context, namespace, pod string, command []string) (Stream, error)
	}
	mode string
}

func (g *Globals) relays(mode string) (*relays, error) {
	if mode != relayAuto && mode != relayLocal && mode != relayExec {
		return nil, fmt.Errorf("--transport %q: choose auto, local or exec", mode)
	}
	cfg, err := g.restConfig()
	if err != nil {
		return nil, err
	}
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	exec, err := newExecTransport(cfg)
	if err != nil {
		return nil, err
	}
	return &relays{c: c, exec: exec, mode: mode}, nil
}

// pod is the VM's active launcher pod; a VM without one is not running, and says so.
func (r *relays) pod(ctx context.Context, vm vmRef) (*corev1.Pod, error) {
	var v v1alpha2.VirtualMachine
	if err := r.c.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: vm.Name}, &v); err != nil {
		return nil, fmt.Errorf("VM %s: %w", vm, err)
	}
	var name string
	for _, p := range v.Status.VirtualMachinePods {
		if p.Active {
			name = p.Name
		}
	}
	if name == "" {
		phase := string(v.Status.Phase)
		if phase == "" {
			phase = "not started yet"
		}
		return nil, fmt.Errorf("VM %s is %s: it has no running launcher pod (start it with `ferry v start %s.%s`)", vm, phase, vm.Name, vm.Namespace)
	}
	var pod corev1.Pod
	if err := r.c.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: name}, &pod); err != nil {
		return nil, err
	}
	return &pod, nil
}

// relayFiles are the files of the run directory each relay reads.
var relayFiles = map[string]string{
	launcher.RelayConsole:    hypervisor.SerialSocketName,
	launcher.RelayConsoleLog: hypervisor.SerialLogName,
	launcher.RelayVNC:        hypervisor.VNCSocketName,
}

// open starts the relay kind to pod's QEMU.
func (r *relays) open(ctx context.Context, pod *corev1.Pod, kind string) (Stream, error) {
	runDir := pod.Annotations[v1alpha2.AnnotationRunDir]
	here := false
	if runDir != "" {
		_, err := os.Stat(filepath.Join(runDir, relayFiles[kind]))
		here = err == nil
	}
	switch {
	case r.mode == relayLocal && !here:
		return nil, fmt.Errorf("pod %s/%s does not run on this machine (no %s in its run directory %q): use --transport exec", pod.Namespace, pod.Name, relayFiles[kind], runDir)
	case here && r.mode != relayExec:
		return startPipeStream(ctx, "the launcher's run directory "+runDir, func(ctx context.Context, in io.Reader, out io.Writer) error {
			return launcher.Relay(ctx, kind, runDir, in, out)
		}), nil
	}
	return r.exec.run(ctx, pod.Namespace, pod.Name, relayCommandLine(kind, pod))
}

// relayCommandLine is the command that runs relay kind in a launcher pod: `ferry-launcher
// console|vnc`, or `ferry launcher console|vnc` in a pod of a release before ferry-launcher
// (whose command is ferry; its image has no ferry-launcher).
func relayCommandLine(kind string, pod *corev1.Pod) []string {
	cmd := []string{"ferry-launcher"}
	if len(pod.Spec.Containers) > 0 && slices.Equal(pod.Spec.Containers[0].Command, []string{"ferry"}) {
		cmd = []string{"ferry", "launcher"}
	}
	if kind == launcher.RelayConsoleLog {
		return append(cmd, launcher.RelayConsole, "--log")
	}
	return append(cmd, kind)
}
