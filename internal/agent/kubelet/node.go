package kubelet

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func (k *Kubelet) nodeObject() *corev1.Node {
	labels := map[string]string{
		"kubernetes.io/hostname": k.o.NodeName,
		"kubernetes.io/os":       "linux",
		"kubernetes.io/arch":     "amd64",
	}
	for key, v := range k.o.Labels {
		labels[key] = v
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    k.o.CPU,
		corev1.ResourceMemory: k.o.Memory,
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: k.o.NodeName, Labels: labels},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: k.o.NodeIP},
				{Type: corev1.NodeHostName, Address: k.o.NodeName},
			},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion:          "v1.37.2-ferry",
				OperatingSystem:         "linux",
				Architecture:            "amd64",
				ContainerRuntimeVersion: "ferry://launcher",
			},
		},
	}
}

func (k *Kubelet) conditions(now metav1.Time) []corev1.NodeCondition {
	c := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return []corev1.NodeCondition{
		c(corev1.NodeReady, corev1.ConditionTrue, "FerryAgentReady", "the Ferry node agent is running"),
		c(corev1.NodeMemoryPressure, corev1.ConditionFalse, "FerryAgentHasSufficientMemory", "no memory pressure"),
		c(corev1.NodeDiskPressure, corev1.ConditionFalse, "FerryAgentHasNoDiskPressure", "no disk pressure"),
		c(corev1.NodePIDPressure, corev1.ConditionFalse, "FerryAgentHasSufficientPID", "no PID pressure"),
	}
}

// register creates the Node or, when it exists (a restarted node), refreshes its labels,
// capacity, addresses and conditions. It leaves spec (cordon, taints) alone.
func (k *Kubelet) register(ctx context.Context) error {
	nodes := k.client.CoreV1().Nodes()
	want := k.nodeObject()
	now := metav1.Now()
	node, err := nodes.Get(ctx, k.o.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err = nodes.Create(ctx, want, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("registering node %s: %w", k.o.NodeName, err)
		}
	} else if err != nil {
		return err
	} else {
		for key, v := range want.Labels {
			if node.Labels == nil {
				node.Labels = map[string]string{}
			}
			node.Labels[key] = v
		}
		if node, err = nodes.Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating node %s: %w", k.o.NodeName, err)
		}
	}
	node.Status = want.Status
	node.Status.Conditions = k.conditions(now)
	if _, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("reporting status of node %s: %w", k.o.NodeName, err)
	}
	return nil
}

// heartbeat renews the node's Lease every LeaseInterval and its Ready condition every
// StatusInterval, until ctx ends. OnLeaseRenewed is told of each successful renewal (the
// fencing watchdog is fed only then).
func (k *Kubelet) heartbeat(ctx context.Context) {
	leaseTimer := time.NewTimer(k.LeaseInterval())
	defer leaseTimer.Stop()
	statusTick := time.NewTicker(k.o.StatusInterval)
	defer statusTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-leaseTimer.C:
			start := time.Now()
			stamp, err := k.renewLease(ctx)
			if err != nil {
				k.log.Error(err, "Could not renew the node lease")
			} else if k.o.OnLeaseRenewed != nil {
				k.o.OnLeaseRenewed(stamp, time.Since(start))
			}
			leaseTimer.Reset(k.LeaseInterval())
		case <-statusTick.C:
			if !k.o.Role.PlaysKubelet() {
				continue
			}
			if err := k.reportReady(ctx); err != nil {
				k.log.Error(err, "Could not report node status")
			}
		}
	}
}

// leaseNamespace is where the Lease this Kubelet renews lives: the node's own, or, beside a
// real kubelet (which renews that one), the agent's in v1alpha2.FencingLeaseNamespace.
func (k *Kubelet) leaseNamespace() string {
	if k.o.Role.PlaysKubelet() {
		return corev1.NamespaceNodeLease
	}
	return v1alpha2.FencingLeaseNamespace
}

// renewLease writes now as the Lease's renew time and returns it. A node removed meanwhile
// (fenced while it was cut off) registers again first; beside a real kubelet, the handler
// waits for the kubelet to register it.
func (k *Kubelet) renewLease(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*k.LeaseInterval())
	defer cancel()
	leases := k.client.CoordinationV1().Leases(k.leaseNamespace())
	// One round trip when the Lease we wrote last is still current, as the kubelet does:
	// under load, a renewal must stay quick for the watchdog to be fed.
	k.leaseMu.Lock()
	last := k.lease
	k.leaseMu.Unlock()
	if last != nil {
		now := metav1.NewMicroTime(time.Now())
		next := last.DeepCopy()
		next.Spec.RenewTime = &now
		if got, err := leases.Update(ctx, next, metav1.UpdateOptions{}); err == nil {
			k.keepLease(got)
			return now.Time, nil
		}
		k.keepLease(nil) // read it again below
	}
	lease, err := leases.Get(ctx, k.o.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, nerr := k.client.CoreV1().Nodes().Get(ctx, k.o.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(nerr) && !k.o.Role.PlaysKubelet() {
			return time.Time{}, fmt.Errorf("node %s is not registered (its kubelet registers it): %w", k.o.NodeName, nerr)
		}
		if apierrors.IsNotFound(nerr) {
			k.log.Info("The node was removed from the cluster (fenced?): registering it again")
			if nerr = k.register(ctx); nerr == nil {
				node, nerr = k.client.CoreV1().Nodes().Get(ctx, k.o.NodeName, metav1.GetOptions{})
			}
		}
		if nerr != nil {
			return time.Time{}, nerr
		}
		now := metav1.NewMicroTime(time.Now())
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.o.NodeName, Namespace: k.leaseNamespace(),
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(k.o.NodeName),
				LeaseDurationSeconds: ptr.To(int32(k.o.LeaseDuration.Seconds())),
				RenewTime:            &now,
			},
		}
		got, err := leases.Create(ctx, lease, metav1.CreateOptions{})
		if err == nil {
			k.keepLease(got)
		}
		return now.Time, err
	}
	if err != nil {
		return time.Time{}, err
	}
	now := metav1.NewMicroTime(time.Now())
	lease.Spec.RenewTime = &now
	lease.Spec.HolderIdentity = ptr.To(k.o.NodeName)
	got, err := leases.Update(ctx, lease, metav1.UpdateOptions{})
	if err == nil {
		k.keepLease(got)
	}
	return now.Time, err
}

func (k *Kubelet) keepLease(l *coordinationv1.Lease) {
	k.leaseMu.Lock()
	k.lease = l
	k.leaseMu.Unlock()
}

func (k *Kubelet) reportReady(ctx context.Context) error {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.o.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// The node was removed (e.g. fenced) while we lived: register again.
		return k.register(ctx)
	}
	if err != nil {
		return err
	}
	now := metav1.Now()
	fresh := k.conditions(now)
	for i, c := range fresh {
		for _, old := range node.Status.Conditions {
			if old.Type == c.Type && old.Status == c.Status {
				fresh[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	node.Status.Conditions = fresh
	_, err = k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}
