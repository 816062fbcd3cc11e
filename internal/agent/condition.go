package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// DefaultWatchdogDevice is where --watchdog=auto looks for the kernel's watchdog. In the
// DaemonSet's privileged container it is the node's own: containerd (CRI) gives a
// privileged container every device the host has when the container is created.
const DefaultWatchdogDevice = "/dev/watchdog"

// fencingCondition is what the agent says on its Node about fencing
// (v1alpha2.NodeConditionFencing).
type fencingCondition struct {
	Status  corev1.ConditionStatus
	Reason  string
	Message string
}

// resolveWatchdog turns --watchdog=auto (or auto:PATH) into device:PATH when PATH (default
// /dev/watchdog) is a character device, and into none otherwise, with why. Other values
// are returned as they are.
func resolveWatchdog(spec string) (resolved, absent string) {
	if spec != "auto" && !strings.HasPrefix(spec, "auto:") {
		return spec, ""
	}
	path := strings.TrimPrefix(strings.TrimPrefix(spec, "auto"), ":")
	if path == "" {
		path = DefaultWatchdogDevice
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "none", path + " does not exist"
	case err != nil:
		return "none", err.Error()
	case fi.Mode()&os.ModeCharDevice == 0:
		return "none", fmt.Sprintf("%s is not a character device (%s)", path, fi.Mode().Type())
	}
	return "device:" + path, ""
}

// watchdogCondition is the condition of a node whose agent runs watchdog spec (as
// resolved), wd the watchdog it opened (nil for none); absent is why auto found none.
func watchdogCondition(spec string, wd Watchdog, absent string) fencingCondition {
	const unfenced = "this node is never fenced: if it fails or is cut off, its VMs are not restarted on other nodes (Ferry cannot know that they stopped). "
	const fix = "To have it fenced, load a watchdog driver (a hardware watchdog's, or modprobe softdog) and delete this node's ferry-agent pod; to run it without fencing, say so with fencing off in its NodeGroup (spec.fencing)."
	if wd == nil {
		if absent != "" {
			return fencingCondition{corev1.ConditionFalse, v1alpha2.ReasonNoWatchdogDevice,
				"No watchdog device (--watchdog=auto: " + absent + "): " + unfenced + fix}
		}
		return fencingCondition{corev1.ConditionFalse, v1alpha2.ReasonWatchdogDisabled,
			"The agent runs without a watchdog (--watchdog=" + spec + "): " + unfenced + fix}
	}
	kind, _, _ := strings.Cut(spec, ":")
	reason := map[string]string{"device": v1alpha2.ReasonWatchdogDevice, "process": v1alpha2.ReasonWatchdogProcess}[kind]
	if reason == "" {
		reason, spec = v1alpha2.ReasonSimulatedWatchdog, "simulated"
	}
	return fencingCondition{corev1.ConditionTrue, reason,
		"The agent has a watchdog (" + spec + "), armed while the node's NodeGroup has fencing on and fed after each renewal of its Lease (" +
			v1alpha2.FencingLeaseNamespace + "/<node>): a node that stops renewing resets itself, and its VMs restart on other nodes."}
}

// failedCondition is the condition of a node whose agent could not arm its watchdog.
func failedCondition(spec string, err error) fencingCondition {
	return fencingCondition{corev1.ConditionFalse, v1alpha2.ReasonWatchdogFailed,
		"The agent could not arm its watchdog (" + spec + "): " + err.Error() + ". Until it can, this node is never fenced: if it fails, its VMs are not restarted on other nodes. " +
			"Is another program (systemd's RuntimeWatchdogSec, a watchdog daemon) holding the device? Free it and delete this node's ferry-agent pod, or turn fencing off in the node's NodeGroup."}
}

// showCondition makes the Node show want, unless it does already. It patches nodes/status
// with that one condition (a strategic merge by type): the kubelet's conditions, which it
// writes the same way, stay as they are.
func showCondition(ctx context.Context, c client.Client, node *corev1.Node, want fencingCondition) error {
	now := metav1.Now()
	transition := now
	for _, have := range node.Status.Conditions {
		if have.Type != v1alpha2.NodeConditionFencing {
			continue
		}
		if have.Status == want.Status && have.Reason == want.Reason && have.Message == want.Message {
			return nil
		}
		if have.Status == want.Status {
			transition = have.LastTransitionTime
		}
	}
	cond := corev1.NodeCondition{Type: v1alpha2.NodeConditionFencing, Status: want.Status, Reason: want.Reason, Message: want.Message,
		LastHeartbeatTime: now, LastTransitionTime: transition}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node.Name}}
	return c.Status().Patch(ctx, n, client.RawPatch(types.StrategicMergePatchType, patch))
}

// keepUnfencedCondition runs on a node whose agent has no watchdog, until ctx ends: it
// shows cond on the Node, and again every resync (a Node registered anew, after a reset
// or by hand, has none), and removes an armed timing an earlier agent left in the Node's
// annotations (it armed a watchdog that this one does not feed).
func keepUnfencedCondition(ctx context.Context, c client.Client, name string, cond fencingCondition, resync time.Duration, log logr.Logger) {
	keepOnNode(ctx, resync, func() error {
		var node corev1.Node
		err := c.Get(ctx, client.ObjectKey{Name: name}, &node)
		if err == nil {
			err = showCondition(ctx, c, &node, cond)
		}
		if err == nil && node.Annotations[v1alpha2.AnnotationWatchdogTimeout] != "" {
			patch := []byte(`{"metadata":{"annotations":{"` + v1alpha2.AnnotationWatchdogTimeout + `":null}}}`)
			err = c.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, patch))
		}
		return err
	}, func() {
		log.Info("This node has no watchdog: it is never fenced, and says so on its Node", "condition", v1alpha2.NodeConditionFencing, "reason", cond.Reason, "message", cond.Message)
	}, func(err error) { log.Error(err, "Could not show on the Node that it has no watchdog") })
}

// keepOnNode runs apply until ctx ends: at once, then every resync (every 2 s until it first
// succeeds: a Node not registered yet is NotFound, which is not reported). done runs after
// the first success, failed after any other failure.
func keepOnNode(ctx context.Context, resync time.Duration, apply func() error, done func(), failed func(error)) {
	shown := false
	for {
		err := apply()
		switch {
		case err == nil && !shown:
			shown = true
			done()
		case err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err):
			failed(err)
		}
		wait := resync
		if !shown {
			wait = min(resync, 2*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
