package agent

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

const (
	feat  = v1alpha2.LabelCPUFeaturePrefix
	model = v1alpha2.LabelCPUModelPrefix
)

// The agent brings its Node's CPU labels to what its QEMU offers: it adds the missing,
// corrects and removes stale ones with its two prefixes, and leaves every other label be.
func TestKeepCPULabels(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{
		"kubernetes.io/hostname": "n1", "group": "blue", // not the agent's
		feat + "sse2":                      "false", // wrong value
		feat + "vmx":                       "true",  // stale: QEMU no longer offers it
		model + "Skylake":                  "true",  // stale
		"cpu-feature.node.kubevirt.io/vmx": "true",  // another prefix: kept
	}}}
	c := conditionClient(node)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	offer := hypervisor.CPUOffer{Accel: "tcg", Features: []string{"sse2", "sse4.2", "lahf-lm"}, Models: []string{"Nehalem", "qemu64"}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		keepCPULabels(ctx, c, "n1", func(context.Context) (hypervisor.CPUOffer, error) { return offer, nil }, 50*time.Millisecond, logr.Discard())
	}()
	want := map[string]string{
		"kubernetes.io/hostname": "n1", "group": "blue", "cpu-feature.node.kubevirt.io/vmx": "true",
		feat + "sse2": "true", feat + "sse4.2": "true", feat + "lahf-lm": "true",
		model + "Nehalem": "true", model + "qemu64": "true",
	}
	awaitLabels(t, c, "n1", want)

	// An admin's edit of an own label is undone at the next resync; others' stay.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var n corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: "n1"}, &n); err != nil {
			return err
		}
		delete(n.Labels, feat+"sse2")
		n.Labels[feat+"avx512f"] = "true"
		n.Labels["team"] = "a"
		return c.Update(ctx, &n)
	})
	if err != nil {
		t.Fatal(err)
	}
	want["team"] = "a"
	awaitLabels(t, c, "n1", want)
	cancel()
	<-done
}

// A failed probe leaves the Node's labels as they were.
func TestKeepCPULabelsProbeFailed(t *testing.T) {
	labels := map[string]string{"group": "blue", feat + "sse2": "true"}
	c := conditionClient(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: maps.Clone(labels)}})
	keepCPULabels(context.Background(), c, "n1", func(context.Context) (hypervisor.CPUOffer, error) {
		return hypervisor.CPUOffer{}, errors.New("no qemu")
	}, time.Millisecond, logr.Discard())
	var n corev1.Node
	if err := c.Get(context.Background(), client.ObjectKey{Name: "n1"}, &n); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(n.Labels, labels) {
		t.Errorf("labels %v; want %v", n.Labels, labels)
	}
}

func TestCPULabelPatch(t *testing.T) {
	want := map[string]string{feat + "sse2": "true"}
	if p := cpuLabelPatch(map[string]string{"a": "b", feat + "sse2": "true"}, want); p != nil {
		t.Errorf("patch %s for labels that are right", p)
	}
	p := cpuLabelPatch(map[string]string{"a": "b", model + "x": "true"}, want)
	if got := string(p); got != `{"metadata":{"labels":{"cpu-feature.node.virtualization.deckhouse.io/sse2":"true","cpu-model.node.virtualization.deckhouse.io/x":null}}}` {
		t.Errorf("patch %s", got)
	}
	// Names QEMU could never give are no labels.
	got := cpuLabels(hypervisor.CPUOffer{Features: []string{"sse2", "bad name", ""}, Models: []string{"Nehalem"}})
	if !maps.Equal(got, map[string]string{feat + "sse2": "true", model + "Nehalem": "true"}) {
		t.Errorf("cpuLabels = %v", got)
	}
}

func awaitLabels(t *testing.T, c client.Client, name string, want map[string]string) {
	t.Helper()
	var last map[string]string
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		var n corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
			return false, err
		}
		last = n.Labels
		return maps.Equal(n.Labels, want), nil
	})
	if err != nil {
		t.Fatalf("labels %v; want %v: %v", last, want, err)
	}
}
