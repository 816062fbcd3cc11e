package controller_test

import (
	"context"
	"maps"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
)

// TestPreflight: the controller starts only where the cluster serves its resources and
// its role may list and watch them, and otherwise says what is missing and how to fix it.
func TestPreflight(t *testing.T) {
	ctx := context.Background()
	if err := controller.Preflight(ctx, restCfg, controller.NeededResources); err != nil {
		t.Fatalf("on a cluster with this release's CRDs: %v", err)
	}

	// A CRD this cluster lacks (Ferry serves every kind of Deckhouse's crds/ now; it has no
	// GPUClass, which VMs' spec.gpus name).
	needed := maps.Clone(controller.NeededResources)
	gv := v1alpha2.GroupVersion.String()
	needed[gv] = append([]string{"gpuclasses"}, needed[gv]...)
	err := controller.Preflight(ctx, restCfg, needed)
	if err == nil || !strings.Contains(err.Error(), "CRDs not installed: gpuclasses.virtualization.deckhouse.io.") ||
		!strings.Contains(err.Error(), "kubectl apply --server-side -k deploy/base") {
		t.Errorf("a missing CRD: got %v", err)
	}

	// A ServiceAccount whose role is not the controller's.
	stranger := rest.CopyConfig(restCfg)
	stranger.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:default:stranger"}
	err = controller.Preflight(ctx, stranger, controller.NeededResources)
	if err == nil || !strings.Contains(err.Error(), "list virtualmachines.virtualization.deckhouse.io, watch virtualmachines.virtualization.deckhouse.io") {
		t.Errorf("a role without Ferry's rights: got %v", err)
	}
	t.Logf("what the controller says: %v", err)
}
