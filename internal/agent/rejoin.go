package agent

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/watchdog"
)

// ResetMarker is watchdog.ResetMarker.
const ResetMarker = watchdog.ResetMarker

// rejoinGrace is how long past its fencing time a reset node waits for the cluster to fence
// it (the storm guard may hold fencing back) before it rejoins anyway.
const rejoinGrace = 5 * time.Second

// awaitFencing holds back a node that its watchdog reset until the cluster has fenced it
// (its Node is gone) or has surely chosen not to. A real node takes longer than that to
// reboot; a node of `ferry up` restarts in a second and would otherwise come back before
// the fencing, and find its VMs' pods, which the cluster is about to start elsewhere.
//
// The Lease it goes by is the one the node's watchdog was fed after, in leaseNamespace. An
// agent that does not handle the node's fencing (kubelet.RoleKubelet) waits alike but
// leaves the marker and the record to the one that does.
func awaitFencing(ctx context.Context, cs kubernetes.Interface, node, marker, leaseNamespace string, owner bool, log logr.Logger) error {
	b, err := os.ReadFile(marker)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	log.Info("This node was reset by its watchdog: it rejoins once the cluster has fenced it", "reset", strings.TrimSpace(string(b)))
	for {
		if fenced(ctx, cs, node, leaseNamespace, log) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if !owner {
		return nil
	}
	recordReset(ctx, cs, node, strings.TrimSpace(string(b)), log)
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// recordReset tells the cluster, in an event on the Node, that its watchdog reset it.
func recordReset(ctx context.Context, cs kubernetes.Interface, node, reset string, log logr.Logger) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: node + ".", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node, APIVersion: "v1"},
		Reason:         "NodeReset",
		Message:        "The node's watchdog reset it (" + reset + "); it rejoined once the cluster had fenced it",
		Type:           corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "ferry-agent", Host: node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		log.Error(err, "Could not record the reset")
	}
}

// fenced tells whether the node's Node object is gone, or its Lease has been stale for
// longer than its fencing time plus rejoinGrace.
func fenced(ctx context.Context, cs kubernetes.Interface, name, leaseNamespace string, log logr.Logger) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		log.Info("The cluster has fenced this node: rejoining")
		return true
	}
	if err != nil {
		return false // cut off still: keep waiting
	}
	armed, ok := v1alpha2.ArmedTiming(node.Annotations)
	lease, err := cs.CoordinationV1().Leases(leaseNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil || lease.Spec.RenewTime == nil || !ok {
		log.Info("The node's fencing time is unknown: rejoining")
		return true
	}
	if age := time.Since(lease.Spec.RenewTime.Time); age > armed.FenceAfter()+rejoinGrace {
		log.Info("The cluster did not fence this node in time: rejoining", "leaseAge", age.Round(time.Second))
		return true
	}
	return false
}
