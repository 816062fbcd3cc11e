package kubelet

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// syncHotplug is the VM handler's part of hot-plugged disks, through the pod's annotations:
// it hands the launcher the disks the VM controller asks for (AnnotationHotplug, which only
// Ferry's controller may write) and reports what the launcher has
// (AnnotationHotplugStatus). A request the launcher cannot take now (its VM migrates) is
// handed again at a later sync; the end of a migration changes the guest's state, which
// brings one.
func (k *Kubelet) syncHotplug(ctx context.Context, pod *corev1.Pod, p *process) error {
	if p.exited() || k.o.Hotplug == nil {
		return nil
	}
	p.mu.Lock()
	g, relayed := p.guest, p.hotplugReq
	p.mu.Unlock()
	if g.QEMU == "" {
		return nil // the launcher has not answered yet
	}
	if raw, ok := pod.Annotations[v1alpha2.AnnotationHotplug]; ok && raw != relayed {
		var devs []v1alpha2.HotplugDevice
		err := json.Unmarshal([]byte(raw), &devs)
		if err == nil {
			err = k.o.Hotplug(ctx, p.runDir, devs)
		}
		switch {
		case err == nil:
			k.log.Info("Handed the launcher its hot-plugged disks", "pod", pod.Namespace+"/"+pod.Name, "disks", len(devs))
			relayed = raw
		case strings.Contains(err.Error(), "409"):
			k.log.Info("The launcher takes no disk now; asking again later", "pod", pod.Namespace+"/"+pod.Name, "why", err.Error())
		default:
			// Refused as bad: asking again would not help; the status keeps saying what the
			// launcher has.
			k.log.Error(err, "The launcher refused the hot-plugged disks", "pod", pod.Namespace+"/"+pod.Name)
			relayed = raw
		}
		p.mu.Lock()
		p.hotplugReq = relayed
		p.mu.Unlock()
	}
	devs := g.BlockDevices
	if devs == nil {
		devs = []v1alpha2.HotplugDeviceStatus{}
	}
	b, _ := json.Marshal(devs)
	cur, has := pod.Annotations[v1alpha2.AnnotationHotplugStatus]
	if cur == string(b) || (!has && len(devs) == 0) {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{v1alpha2.AnnotationHotplugStatus: string(b)}}})
	_, err := k.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

func sameBlockDevices(a, b []v1alpha2.HotplugDeviceStatus) bool {
	return slices.Equal(a, b)
}
