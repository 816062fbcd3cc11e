package scale

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
)

// failoverStages splits each restarted VM's failover into stages, from what the cluster
// recorded (to the second): the fault (t0) → the Fencing event of the node it ran on
// (byNode, before the fault) → its first launcher pod created since on a node that did
// not fail → that pod Ready → the VM's Running condition. It says where the time of the
// slow ones went.
func failoverStages(ctx context.Context, c client.Client, ns string, byNode map[string][]string, failed []string, t0 time.Time) (string, error) {
	from := map[string]string{} // VM → the failed node it ran on
	for _, n := range failed {
		for _, vm := range byNode[n] {
			from[vm] = n
		}
	}
	var events corev1.EventList
	if err := c.List(ctx, &events); err != nil {
		return "", err
	}
	fenced := map[string]time.Time{}
	for _, e := range events.Items {
		if e.InvolvedObject.Kind == "Node" && e.Reason == "Fencing" && slices.Contains(failed, e.InvolvedObject.Name) {
			at := eventTime(&e)
			if at.After(t0.Add(-time.Second)) && (fenced[e.InvolvedObject.Name].IsZero() || at.Before(fenced[e.InvolvedObject.Name])) {
				fenced[e.InvolvedObject.Name] = at
			}
		}
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns), client.HasLabels{v1alpha2.LabelVMName}); err != nil {
		return "", err
	}
	newPod := map[string]*corev1.Pod{}
	hopped := map[string]bool{} // VMs restarted on a failed node not yet fenced, first
	for i := range pods.Items {
		p := &pods.Items[i]
		vm := p.Labels[v1alpha2.LabelVMName]
		if p.CreationTimestamp.Time.Before(t0.Add(-time.Second)) {
			continue
		}
		if slices.Contains(failed, p.Spec.NodeName) {
			hopped[vm] = true
			continue
		}
		if q := newPod[vm]; q == nil || p.CreationTimestamp.Before(&q.CreationTimestamp) {
			newPod[vm] = p
		}
	}
	var l v1alpha2.VirtualMachineList
	if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return "", err
	}
	var toFence, toPod, toReady, toRunning []time.Duration
	missing := 0
	for i := range l.Items {
		vm := &l.Items[i]
		node, lost := from[vm.Name]
		if !lost {
			continue
		}
		p := newPod[vm.Name]
		run := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionRunning)
		var ready time.Time
		if p != nil {
			for _, cnd := range p.Status.Conditions {
				if cnd.Type == corev1.PodReady && cnd.Status == corev1.ConditionTrue {
					ready = cnd.LastTransitionTime.Time
				}
			}
		}
		f := fenced[node]
		if p == nil || f.IsZero() || ready.IsZero() || run == nil {
			missing++
			continue
		}
		toFence = append(toFence, f.Sub(t0))
		toPod = append(toPod, p.CreationTimestamp.Time.Sub(f))
		toReady = append(toReady, ready.Sub(p.CreationTimestamp.Time))
		toRunning = append(toRunning, run.LastTransitionTime.Time.Sub(ready))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "fault → node Fencing event %s; → new launcher pod %s; → pod Ready %s; → VM Running condition %s (to the second)",
		bench.Pct(toFence), bench.Pct(toPod), bench.Pct(toReady), bench.Pct(toRunning))
	if len(hopped) > 0 {
		fmt.Fprintf(&b, "; at least %d VMs were first restarted on another failed node, not yet fenced", len(hopped))
	}
	if missing > 0 {
		fmt.Fprintf(&b, "; %d VMs without a complete record", missing)
	}
	return b.String(), nil
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}
