package agent

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// cpuLabelPrefixes are the Node labels the agent owns: what its QEMU offers a guest
// (Deckhouse's labels, read by the VirtualMachineClass controller for placement and
// Discovery classes).
var cpuLabelPrefixes = []string{v1alpha2.LabelCPUFeaturePrefix, v1alpha2.LabelCPUModelPrefix}

// cpuLabels are the labels of a node whose QEMU offers o: <prefix><name>=true for each
// feature and model. A name that cannot be a label's is left out (QEMU's names all can).
func cpuLabels(o hypervisor.CPUOffer) map[string]string {
	out := map[string]string{}
	add := func(prefix string, names []string) {
		for _, n := range names {
			if k := prefix + n; len(validation.IsQualifiedName(k)) == 0 {
				out[k] = "true"
			}
		}
	}
	add(v1alpha2.LabelCPUFeaturePrefix, o.Features)
	add(v1alpha2.LabelCPUModelPrefix, o.Models)
	return out
}

func ownCPULabel(k string) bool {
	return slices.ContainsFunc(cpuLabelPrefixes, func(p string) bool { return strings.HasPrefix(k, p) })
}

// cpuLabelPatch is the merge patch that makes the CPU labels of a Node labelled have equal
// want (adding, correcting and removing labels with cpuLabelPrefixes only), or nil when
// they are equal already.
func cpuLabelPatch(have, want map[string]string) []byte {
	change := map[string]any{}
	for k, v := range want {
		if have[k] != v {
			change[k] = v
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok && ownCPULabel(k) {
			change[k] = nil // a merge patch's null removes the label
		}
	}
	if len(change) == 0 {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": change}})
	return patch
}

// keepCPULabels runs until ctx ends: it asks probe once what the node's QEMU offers, then
// keeps the Node's CPU labels equal to it, checking again every resync (a Node registered
// anew, after a reset or by hand, has none; an admin may have edited them). A failed probe
// leaves the labels as they are, so that a transient failure does not take a node away
// from the classes placed on it; it is logged.
func keepCPULabels(ctx context.Context, c client.Client, name string, probe func(context.Context) (hypervisor.CPUOffer, error), resync time.Duration, log logr.Logger) {
	start := time.Now()
	offer, err := probe(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.Error(err, "Could not probe what this node's QEMU offers a guest: its CPU labels stay as they are", "prefixes", cpuLabelPrefixes)
		}
		return
	}
	log.Info("Probed what this node's QEMU offers a guest", "accel", offer.Accel, "features", len(offer.Features), "models", len(offer.Models),
		"refusedWithEnforce", offer.Refused, "took", time.Since(start).Round(time.Millisecond).String())
	want := cpuLabels(offer)
	keepOnNode(ctx, resync, func() error { return syncCPULabels(ctx, c, name, want) }, func() {
		log.Info("Labelled the Node with its CPU features and models", "labels", len(want))
	}, func(err error) { log.Error(err, "Could not label the Node with its CPU features and models") })
}

// syncCPULabels patches Node name's CPU labels to want, if they differ.
func syncCPULabels(ctx context.Context, c client.Client, name string, want map[string]string) error {
	var node corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &node); err != nil {
		return err
	}
	patch := cpuLabelPatch(node.Labels, want)
	if patch == nil {
		return nil
	}
	return c.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, patch))
}
