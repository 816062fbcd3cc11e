package controller

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// neededResources are the custom resources the controller watches, by group version: every one
// must be served and listable, or its informer waits forever and the controller never
// becomes ready without saying why.
var neededResources = map[string][]string{
	v1alpha2.GroupVersion.String(): {
		"virtualmachines", "virtualdisks", "clustervirtualimages", "virtualimages",
		"virtualmachineoperations", "virtualmachineclasses", "virtualmachineipaddresses",
		"virtualmachineipaddressleases", "virtualmachineblockdeviceattachments", "virtualdisksnapshots", "virtualmachinepools",
		"virtualmachinesnapshots", "virtualmachinesnapshotoperations", "virtualmachinemacaddresses", "virtualmachinemacaddressleases",
		"nodeusbdevices", "usbdevices",
	},
	deckhousev1.GroupVersion.String(): {"nodegroups"},
}

// preflight checks that the cluster serves every custom resource the controller uses and
// that its ServiceAccount may list and watch each one. A controller started on the
// manifests of another release (kubectl apply of an older deploy/base with this image)
// then stops at once with what is missing and how to fix it.
func preflight(ctx context.Context, cfg *rest.Config, needed map[string][]string) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var missing, forbidden []string
	for _, gv := range slices.Sorted(maps.Keys(needed)) {
		served := map[string]bool{}
		list, err := dc.ServerResourcesForGroupVersion(gv)
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("asking the apiserver which resources of %s it serves: %w", gv, err)
		}
		if list != nil {
			for _, r := range list.APIResources {
				served[r.Name] = true
			}
		}
		group := strings.Split(gv, "/")[0]
		for _, res := range needed[gv] {
			if !served[res] {
				missing = append(missing, res+"."+group)
				continue
			}
			for _, verb := range []string{"list", "watch"} {
				review, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
					Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
						Group: group, Resource: res, Verb: verb}},
				}, metav1.CreateOptions{})
				if err != nil {
					return fmt.Errorf("asking the apiserver whether the controller may %s %s: %w", verb, res, err)
				}
				if !review.Status.Allowed {
					forbidden = append(forbidden, verb+" "+res+"."+group)
				}
			}
		}
	}
	if len(missing) == 0 && len(forbidden) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("this cluster's install of Ferry is not this controller's release")
	if len(missing) > 0 {
		fmt.Fprintf(&b, "; CRDs not installed: %s", strings.Join(missing, ", "))
	}
	if len(forbidden) > 0 {
		fmt.Fprintf(&b, "; the controller's role does not allow: %s", strings.Join(forbidden, ", "))
	}
	b.WriteString(". Apply the manifests of the release this image belongs to: kubectl apply --server-side -k deploy/base (or helm upgrade of the chart)")
	return fmt.Errorf("%s", b.String())
}
