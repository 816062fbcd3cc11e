package failover

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
)

// The faults `ferry node` injects, each with the verb that undoes it.
var faultRestore = map[string]string{
	"poweroff":   "poweron",
	"disconnect": "connect",
	"freeze":     "thaw",
}

// workerGroup is the NodeGroup of `ferry up`'s nodes.
const workerGroup = "worker"

// fencingProfile reads the fencing profile of the NodeGroup worker: its profile, its
// explicit timeout, or "off". The group is read unstructured: the benchmark's client
// knows only Ferry's and Kubernetes' own types.
func fencingProfile(ctx context.Context, c client.Client) (string, error) {
	g := &unstructured.Unstructured{}
	g.SetGroupVersionKind(schema.GroupVersionKind{Group: deckhousev1.GroupVersion.Group, Version: deckhousev1.GroupVersion.Version, Kind: "NodeGroup"})
	if err := c.Get(ctx, client.ObjectKey{Name: workerGroup}, g); err != nil {
		return "", fmt.Errorf("NodeGroup %s: %w", workerGroup, err)
	}
	if mode, _, _ := unstructured.NestedString(g.Object, "spec", "fencing", "mode"); mode != string(deckhousev1.FencingWatchdog) {
		return "off", nil
	}
	if p, _, _ := unstructured.NestedString(g.Object, "spec", "fencing", "watchdog", "profile"); p != "" {
		return p, nil
	}
	if t, _, _ := unstructured.NestedString(g.Object, "spec", "fencing", "watchdog", "timeout"); t != "" {
		return "timeout " + t, nil
	}
	return "default (" + deckhousev1.DefaultWatchdogTimeout.String() + ")", nil
}

// waitNodesArmed waits until the cluster has want nodes, all Ready with an armed watchdog,
// and returns their timing (that of the first node; a differing one is an error).
func waitNodesArmed(ctx context.Context, c client.Client, want int, timeout time.Duration) (deckhousev1.Timing, error) {
	deadline := time.Now().Add(timeout)
	for {
		var nodes corev1.NodeList
		why := ""
		var timing deckhousev1.Timing
		if err := c.List(ctx, &nodes); err != nil {
			why = err.Error()
		} else if len(nodes.Items) < want {
			why = fmt.Sprintf("%d of %d nodes registered", len(nodes.Items), want)
		} else {
			for i := range nodes.Items {
				n := &nodes.Items[i]
				t, armed := v1alpha2.ArmedTiming(n.Annotations)
				switch {
				case !bench.NodeReady(n):
					why = "node " + n.Name + " not Ready"
				case !armed:
					why = "node " + n.Name + " has not armed its watchdog"
				case timing != (deckhousev1.Timing{}) && t != timing:
					return t, fmt.Errorf("nodes armed different timings: %s and %s", timing, t)
				}
				timing = t
			}
		}
		if why == "" {
			return timing, nil
		}
		if time.Now().After(deadline) {
			return deckhousev1.Timing{}, fmt.Errorf("nodes not Ready with armed watchdogs within %s: %s", timeout, why)
		}
		if err := bench.Sleep(ctx, 250*time.Millisecond); err != nil {
			return deckhousev1.Timing{}, err
		}
	}
}

// waitNodeBack waits until node name is registered again after being fenced (a Node with
// another UID than gone, unless gone is empty), Ready, with its watchdog armed (when
// armed); so that the next fault finds all nodes up and the storm guard quiet.
func waitNodeBack(ctx context.Context, c client.Client, name string, gone types.UID, armed bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := &corev1.Node{}
		why := ""
		err := c.Get(ctx, client.ObjectKey{Name: name}, n)
		_, isArmed := v1alpha2.ArmedTiming(n.Annotations)
		switch {
		case apierrors.IsNotFound(err):
			why = "not registered"
		case err != nil:
			why = err.Error()
		case gone != "" && n.UID == gone:
			why = "not fenced (the same Node object)"
		case !bench.NodeReady(n):
			why = "not Ready"
		case armed && !isArmed:
			why = "watchdog not armed"
		}
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not back within %s: %s", name, timeout, why)
		}
		if err := bench.Sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}
