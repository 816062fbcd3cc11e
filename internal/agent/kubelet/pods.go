package kubelet

import (
	"context"
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// AnnotationRunDir on a pod says where its launcher keeps the guest's serial log.
const AnnotationRunDir = "virtualization.ferryvm.io/run-dir"

// Reasons the agent gives on pods.
const (
	// ReasonNodeRestarted ends a pod whose process is gone with the node's agent (or with
	// ferry up, which ends its nodes' pods the same way when it starts again).
	ReasonNodeRestarted = "NodeRestarted"
	reasonStartFailed   = "StartFailed"
)

// sync brings one pod of this node toward its spec and reports its status.
func (k *Kubelet) sync(ctx context.Context, uid types.UID) error {
	pod := k.podByUID(uid)
	k.mu.Lock()
	proc := k.procs[uid]
	k.mu.Unlock()

	if pod == nil {
		// Removed from the API (force-deleted, or removed after it ended, as the controller
		// removes a migration's source): nothing may keep running for it, and once its
		// process is gone the pod is forgotten. (Stopping it again at every sync, which
		// finish's wake-up brings, kept a node's agent spinning on every pod removed so:
		// half a core after a few migrations.)
		if proc != nil {
			if proc.exited() {
				k.forget(uid)
			} else if proc.markStopping() {
				go k.finish(proc, 0)
			}
		}
		return nil
	}
	if pod.DeletionTimestamp != nil {
		return k.terminate(ctx, pod, proc)
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		if proc != nil && !proc.exited() && pod.Status.Reason == v1alpha2.ReasonNodeFenced {
			// The cluster fenced this node while it was cut off, and its watchdog did not
			// stop the VM: the VM may already run elsewhere, so it dies now, without grace.
			k.log.Info("Killing the launcher of a pod that was ended by fencing", "pod", pod.Namespace+"/"+pod.Name)
			go k.finish(proc, 0)
		}
		return nil
	}
	if proc == nil {
		if pod.Status.Phase == corev1.PodRunning {
			// Ours from before this agent started: its process died with the old agent.
			return k.fail(ctx, pod, ReasonNodeRestarted, "the node's agent restarted and the VM's process is gone")
		}
		p, err := k.start(ctx, pod)
		if err != nil {
			return k.fail(ctx, pod, reasonStartFailed, err.Error())
		}
		k.mu.Lock()
		k.procs[uid] = p
		k.mu.Unlock()
		proc = p
		written, err := k.annotateRunDir(ctx, pod, p.runDir)
		if err != nil {
			return err
		}
		pod = written
		k.log.Info("Started launcher", "pod", pod.Namespace+"/"+pod.Name, "container", p.cmd.ID())
	}
	if k.o.Role.HandlesVMs() {
		if err := k.syncMigration(ctx, pod, proc); err != nil {
			return err
		}
		if err := k.syncHotplug(ctx, pod, proc); err != nil {
			return err
		}
	}
	return k.report(ctx, pod, proc)
}

// terminate stops the pod's process within its grace period, then removes the pod.
func (k *Kubelet) terminate(ctx context.Context, pod *corev1.Pod, proc *process) error {
	if proc != nil && !proc.exited() {
		if proc.markStopping() {
			grace := time.Duration(ptr.Deref(pod.DeletionGracePeriodSeconds, 30)) * time.Second
			go k.finish(proc, grace)
		}
		return nil // the process's end wakes us again
	}
	k.mu.Lock()
	delete(k.procs, pod.UID)
	k.mu.Unlock()
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return err
	}
	k.log.Info("Removed pod", "pod", pod.Namespace+"/"+pod.Name)
	return nil
}

// forget drops what the agent keeps of a pod that is gone from the API and whose process
// has ended.
func (k *Kubelet) forget(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.procs, uid)
	delete(k.keys, uid)
}

func (k *Kubelet) finish(p *process, grace time.Duration) {
	p.stop(grace)
	k.queue.Add(p.uid)
}

// annotateRunDir records the pod's run directory and returns the pod as written: the
// status write that follows must not start from the older copy (it would conflict).
func (k *Kubelet) annotateRunDir(ctx context.Context, pod *corev1.Pod, dir string) (*corev1.Pod, error) {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationRunDir: dir}}})
	return k.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
}

// fail ends a pod that cannot run (or was lost) with a reason and message.
func (k *Kubelet) fail(ctx context.Context, pod *corev1.Pod, reason, msg string) error {
	k.log.Info("Pod failed", "pod", pod.Namespace+"/"+pod.Name, "reason", reason, "message", msg)
	return k.writeStatus(ctx, pod, FailedStatus(pod, reason, msg))
}

// FailedStatus is pod's status once it ended without running, or lost its process: Failed,
// its container terminated with code 128, reason and msg on both.
func FailedStatus(pod *corev1.Pod, reason, msg string) *corev1.PodStatus {
	st := pod.Status.DeepCopy()
	st.Phase = corev1.PodFailed
	st.Reason, st.Message = reason, msg
	now := metav1.Now()
	st.ContainerStatuses = []corev1.ContainerStatus{{
		Name:  pod.Spec.Containers[0].Name,
		Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 128, Reason: reason, Message: msg, FinishedAt: now,
		}},
	}}
	setCond(st, corev1.PodReady, corev1.ConditionFalse, reason, msg)
	setCond(st, corev1.ContainersReady, corev1.ConditionFalse, reason, msg)
	return st
}

// report writes the pod's status from its process, when it changed.
func (k *Kubelet) report(ctx context.Context, pod *corev1.Pod, p *process) error {
	st := pod.Status.DeepCopy()
	c := pod.Spec.Containers[0]
	started := metav1.NewTime(p.started)
	st.HostIP, st.PodIP = k.o.NodeIP, k.o.NodeIP
	st.HostIPs = []corev1.HostIP{{IP: k.o.NodeIP}}
	st.PodIPs = []corev1.PodIP{{IP: k.o.NodeIP}}
	if st.StartTime == nil {
		st.StartTime = &started
	}
	setCond(st, corev1.PodInitialized, corev1.ConditionTrue, "", "")

	// Whether the process ended is read before its exit code: the code is set before the
	// end is signalled, so a process that ends meanwhile is not reported with code 0 (which
	// would turn a migrated-away pod into a guest shutdown).
	exited := p.exited()
	p.mu.Lock()
	ready, guest, code, finished := k.ready(p), p.guest, p.exitCode, p.finishedAt
	p.mu.Unlock()
	if k.o.Role.HandlesVMs() {
		// The gate and Ready say the same here: this agent is the kubelet and the handler.
		gate, reason, msg := guestCondition(guest)
		if !exited {
			setCond(st, v1alpha2.PodConditionGuestReady, gate, reason, msg)
			agent, reason, msg := agentCondition(guest)
			setCond(st, v1alpha2.PodConditionGuestAgent, agent, reason, msg)
		}
	} else {
		// A kubelet knows nothing of guests: Ready is the readiness gates'.
		ready = gatesReady(pod)
	}

	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: "ferry://" + p.cmd.ID()}
	if exited {
		reason := "Completed"
		st.Phase = corev1.PodSucceeded
		switch {
		case code == 0:
		case !k.o.Role.HandlesVMs():
			// As a real kubelet reports it: the code alone says what it means.
			reason, st.Phase = "Error", corev1.PodFailed
		case code == exitMigrated:
			reason = v1alpha2.ReasonPodMigrated
		case code == exitSuperseded:
			reason, st.Phase = v1alpha2.ReasonSuperseded, corev1.PodFailed
		default:
			reason, st.Phase = "Error", corev1.PodFailed
		}
		cs.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: int32(code), Reason: reason, Message: p.terminationMessage(),
			StartedAt: started, FinishedAt: metav1.NewTime(finished),
		}
		setCond(st, corev1.ContainersReady, corev1.ConditionFalse, "PodCompleted", "")
		setCond(st, corev1.PodReady, corev1.ConditionFalse, "PodCompleted", "")
	} else {
		st.Phase = corev1.PodRunning
		cs.Started = ptr.To(true)
		cs.Ready = ready
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: started}
		switch {
		case ready:
			setCond(st, corev1.ContainersReady, corev1.ConditionTrue, "", "")
			setCond(st, corev1.PodReady, corev1.ConditionTrue, "", "")
		case !k.o.Role.HandlesVMs():
			// As a kubelet says it of a container without a readiness probe.
			cs.Ready = true
			setCond(st, corev1.ContainersReady, corev1.ConditionTrue, "", "")
			setCond(st, corev1.PodReady, corev1.ConditionFalse, "ReadinessGatesNotReady", "a readiness gate of the pod is not True")
		default:
			// Not running, in the gate's words.
			_, reason, msg := guestCondition(guest)
			setCond(st, corev1.ContainersReady, corev1.ConditionFalse, reason, msg)
			setCond(st, corev1.PodReady, corev1.ConditionFalse, reason, msg)
		}
	}
	st.ContainerStatuses = []corev1.ContainerStatus{cs}
	if sameStatus(&pod.Status, st) {
		return nil
	}
	return k.writeStatus(ctx, pod, st)
}

func (k *Kubelet) writeStatus(ctx context.Context, pod *corev1.Pod, st *corev1.PodStatus) error {
	cp := pod.DeepCopy()
	cp.Status = *st
	_, err := k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// guestCondition is the guest-ready gate's status, reason and message: True while QEMU runs
// the guest's vCPUs; False with the evidence when the guest panicked or QEMU stopped it on
// an I/O error; False while QEMU does not run it yet (or any more). A guest that runs and
// prints nothing is running: quiet is not hung.
func guestCondition(g GuestState) (corev1.ConditionStatus, string, string) {
	switch {
	case g.Fault != nil:
		return corev1.ConditionFalse, g.Fault.Reason, g.Fault.Message
	case g.QEMU == "running":
		return corev1.ConditionTrue, v1alpha2.ReasonGuestRunning, "QEMU runs the guest's vCPUs"
	case g.QEMU == "":
		return corev1.ConditionFalse, v1alpha2.ReasonGuestNotRunning, v1alpha2.MessageQEMUStarting
	case g.QEMU == "inmigrate":
		return corev1.ConditionFalse, v1alpha2.ReasonGuestNotRunning, "QEMU waits for the incoming migration"
	}
	return corev1.ConditionFalse, v1alpha2.ReasonGuestNotRunning, "QEMU does not run the guest: its run state is " + g.QEMU
}

// maxAgentMessage bounds the guest agent's report in a pod condition: the guest, not Ferry,
// chose its content.
const maxAgentMessage = 8 << 10

// agentCondition is the pod's guest-agent condition: True with the agent's report as JSON in
// its message while the QEMU guest agent answers.
func agentCondition(g GuestState) (corev1.ConditionStatus, string, string) {
	if g.Agent == nil {
		return corev1.ConditionFalse, v1alpha2.ReasonAgentNotReady, "the QEMU guest agent does not answer (not installed, not started yet, or the guest is not running)"
	}
	msg, err := json.Marshal(g.Agent)
	if err != nil || len(msg) > maxAgentMessage {
		msg = []byte("{}")
	}
	return corev1.ConditionTrue, v1alpha2.ReasonAgentReady, string(msg)
}

// gatesReady tells whether every readiness gate of the pod has its condition True.
func gatesReady(pod *corev1.Pod) bool {
	for _, g := range pod.Spec.ReadinessGates {
		if c := podCondition(&pod.Status, g.ConditionType); c == nil || c.Status != corev1.ConditionTrue {
			return false
		}
	}
	return true
}

func podCondition(st *corev1.PodStatus, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

// setCond sets a pod condition, keeping its transition time when the status is unchanged.
func setCond(st *corev1.PodStatus, t corev1.PodConditionType, s corev1.ConditionStatus, reason, msg string) {
	now := metav1.Now()
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			c := &st.Conditions[i]
			if c.Status != s {
				c.LastTransitionTime = now
			}
			c.Status, c.Reason, c.Message = s, reason, msg
			return
		}
	}
	st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg, LastTransitionTime: now})
}

// sameStatus compares what matters to readers, so unchanged pods cause no writes.
func sameStatus(a, b *corev1.PodStatus) bool {
	if a.Phase != b.Phase || a.PodIP != b.PodIP || len(a.ContainerStatuses) != len(b.ContainerStatuses) {
		return false
	}
	for _, c := range b.Conditions {
		found := false
		for _, o := range a.Conditions {
			if o.Type == c.Type {
				found = o.Status == c.Status && o.Reason == c.Reason && (c.Type != v1alpha2.PodConditionGuestAgent || o.Message == c.Message)
			}
		}
		if !found {
			return false
		}
	}
	for i := range a.ContainerStatuses {
		x, y := a.ContainerStatuses[i], b.ContainerStatuses[i]
		if x.Ready != y.Ready || (x.State.Running == nil) != (y.State.Running == nil) || (x.State.Terminated == nil) != (y.State.Terminated == nil) {
			return false
		}
	}
	return true
}
