package kubelet

import (
	"context"
	"encoding/json"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// handle is the VM handler's sync of one pod of the node when a real kubelet runs it
// (RoleHandler): it watches the launcher from the moment the kubelet reports its container
// running, relays migrations, and keeps the pod's guest-ready gate in step with the guest.
func (k *Kubelet) handle(ctx context.Context, uid types.UID) error {
	pod := k.podByUID(uid)
	k.mu.Lock()
	p := k.procs[uid]
	k.mu.Unlock()
	if pod == nil {
		if p != nil {
			p.cmd.(*observed).end(137)
			k.mu.Lock()
			delete(k.procs, uid)
			k.mu.Unlock()
		}
		return nil
	}
	if _, launcher := pod.Labels[v1alpha2.LabelLauncher]; !launcher {
		return nil
	}
	cs := launcherStatus(pod)
	if p == nil {
		var started metav1.Time
		switch {
		case cs != nil && cs.State.Running != nil:
			started = cs.State.Running.StartedAt
		case cs != nil && cs.State.Terminated != nil:
			// Ended before this agent saw it run (the agent restarted meanwhile): what it
			// left in its run directory about a migration is still read.
			started = cs.State.Terminated.StartedAt
		default:
			return nil // not started yet: the kubelet's to do
		}
		p = &process{uid: uid, runDir: k.runDirOf(pod), cmd: &observed{id: cs.ContainerID, ended: make(chan struct{})},
			started: started.Time, done: make(chan struct{}), kick: make(chan struct{}, 1)}
		k.mu.Lock()
		k.procs[uid] = p
		k.mu.Unlock()
		go k.watch(ctx, p)
		if pod.Annotations[AnnotationRunDir] != p.runDir {
			written, err := k.annotateRunDir(ctx, pod, p.runDir)
			if err != nil {
				return err
			}
			pod = written
		}
		k.log.Info("Watching launcher", "pod", pod.Namespace+"/"+pod.Name, "container", cs.ContainerID)
	}
	if cs != nil && cs.State.Terminated != nil {
		p.cmd.(*observed).end(int(cs.State.Terminated.ExitCode))
	}
	if err := k.syncMigration(ctx, pod, p); err != nil {
		return err
	}
	if err := k.syncHotplug(ctx, pod, p); err != nil {
		return err
	}
	return k.reportGuest(ctx, pod, p)
}

// launcherStatus is the status of the pod's launcher container, nil before the kubelet
// reports one.
func launcherStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == pod.Spec.Containers[0].Name {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// reportGuest sets the pod's guest-ready gate from QEMU's run state, and its guest-agent
// condition from the QEMU guest agent, when they changed.
func (k *Kubelet) reportGuest(ctx context.Context, pod *corev1.Pod, p *process) error {
	if p.exited() {
		return nil
	}
	p.mu.Lock()
	guest := p.guest
	p.mu.Unlock()
	var conds []corev1.PodCondition
	add := func(t corev1.PodConditionType, status corev1.ConditionStatus, reason, msg string, exact bool) {
		since := metav1.Now()
		if c := podCondition(&pod.Status, t); c != nil {
			if c.Status == status && c.Reason == reason && (!exact || c.Message == msg) {
				return
			}
			if c.Status == status {
				since = c.LastTransitionTime
			}
		}
		conds = append(conds, corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: msg, LastTransitionTime: since})
	}
	status, reason, msg := guestCondition(guest)
	add(v1alpha2.PodConditionGuestReady, status, reason, msg, false)
	status, reason, msg = agentCondition(guest)
	add(v1alpha2.PodConditionGuestAgent, status, reason, msg, true)
	if len(conds) == 0 {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	_, err := k.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}

// forgetAll stops watching the node's launchers, which run on (they are the kubelet's).
func (k *Kubelet) forgetAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for uid, p := range k.procs {
		if o, ok := p.cmd.(*observed); ok {
			o.end(137)
		}
		delete(k.procs, uid)
	}
}

// observed is a launcher container that a real kubelet runs: this agent only learns of its
// end from the pod's status, and never stops it.
type observed struct {
	id    string
	once  sync.Once
	ended chan struct{}
	code  int
}

func (o *observed) end(code int) {
	o.once.Do(func() {
		o.code = code
		close(o.ended)
	})
}

func (o *observed) ID() string { return o.id }
func (o *observed) Wait() int  { <-o.ended; return o.code }
func (o *observed) Terminate() {}
func (o *observed) Kill()      {}
