package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestHotplugRelay: the VM handler hands the launcher the disks the pod's annotation asks
// for, once per request, asks again after the launcher said "not now" (409: its VM
// migrates), and reports what the launcher has in the pod's hotplug-status annotation.
func TestHotplugRelay(t *testing.T) {
	const node = "n1"
	want := []v1alpha2.HotplugDevice{{Slot: 31, Name: "att", Path: "/storage/disks/d.qcow2", Format: "qcow2"}}
	raw, _ := json.Marshal(want)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "vms", Name: "virt-launcher-vm-abc", UID: "uid-1",
			Labels:      map[string]string{v1alpha2.LabelLauncher: "virt-launcher", v1alpha2.LabelVMName: "vm"},
			Annotations: map[string]string{v1alpha2.AnnotationHotplug: string(raw)}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "compute", Command: []string{"ferry"}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "compute", ContainerID: "containerd://c1",
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		}}},
	}
	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, UID: "node-uid"}}, pod)
	fl := &fakeLauncher{dirs: map[string]bool{}}
	fl.set(GuestState{QEMU: "running", Migration: &v1alpha2.MigrationProgress{URI: "tcp:x:1", Status: "active"}})
	var mu sync.Mutex
	var calls [][]v1alpha2.HotplugDevice
	busy, taken := true, 0
	k := New(cs, Options{
		Role: RoleHandler, NodeName: node, NodeIP: "127.0.0.1", StateDir: t.TempDir(),
		LeaseInterval: 50 * time.Millisecond, Probe: fl.probe, Log: logr.Discard(),
		Hotplug: func(_ context.Context, _ string, devs []v1alpha2.HotplugDevice) error {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, devs)
			if busy {
				return errors.New("launcher PUT /blockdevices: 409 Conflict: disks cannot be attached or detached now: a migration is running")
			}
			taken++
			return nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return cond(), nil
		}); err != nil {
			t.Fatalf("%s: not within 10s", what)
		}
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(calls)
	}
	waitFor("the request handed to the launcher", func() bool { return count() >= 1 })
	// Refused while the VM migrates; the migration ends: handed again, and taken.
	mu.Lock()
	busy = false
	mu.Unlock()
	fl.set(GuestState{QEMU: "running", Migration: &v1alpha2.MigrationProgress{URI: "tcp:x:1", Status: "failed"}})
	// Refused as often as the handler synced meanwhile; then handed again and taken.
	waitFor("the request handed again and taken", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return taken == 1
	})
	n := count()
	mu.Lock()
	if got := calls[n-1]; len(got) != 1 || got[0] != want[0] {
		t.Errorf("handed %+v, want %+v", got, want)
	}
	mu.Unlock()

	// The launcher reports the disk: so does the pod.
	rep := []v1alpha2.HotplugDeviceStatus{{HotplugDevice: want[0], Target: "hotplug-1f", State: v1alpha2.HotplugAttached}}
	fl.set(GuestState{QEMU: "running", BlockDevices: rep})
	waitFor("the pod's hotplug-status", func() bool {
		p, _ := cs.CoreV1().Pods("vms").Get(context.Background(), pod.Name, metav1.GetOptions{})
		var got []v1alpha2.HotplugDeviceStatus
		return json.Unmarshal([]byte(p.Annotations[v1alpha2.AnnotationHotplugStatus]), &got) == nil && len(got) == 1 && got[0] == rep[0]
	})
	// Taken once: not handed again until the request changes.
	time.Sleep(300 * time.Millisecond)
	if count() != n {
		t.Errorf("the same request was handed %d times after it was taken", count()-n)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{v1alpha2.AnnotationHotplug: "[]"}}})
	if _, err := cs.CoreV1().Pods("vms").Patch(context.Background(), pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("the new request handed", func() bool { return count() == n+1 })
}
