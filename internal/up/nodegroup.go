package up

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
)

// nodeGroupName is the NodeGroup of `ferry up`'s nodes.
const nodeGroupName = "worker"

// DefaultFencingProfile is the watchdog profile `ferry up` gives its nodes: a 5 s watchdog.
const DefaultFencingProfile = string(deckhousev1.ProfileFast)

var profiles = []string{string(deckhousev1.ProfileCritical), string(deckhousev1.ProfileFast), string(deckhousev1.ProfileBalanced), string(deckhousev1.ProfileTolerant)}

func validProfile(p string) error {
	if p == "" || p == "off" || slices.Contains(profiles, p) {
		return nil
	}
	return fmt.Errorf("--fencing-profile %q: want one of %s, or off", p, strings.Join(profiles, ", "))
}

// ensureNodeGroup creates the nodes' NodeGroup with fencing on (unless profile is off). An
// existing group is left as it is: the admin may have changed it.
func ensureNodeGroup(ctx context.Context, c client.Client, profile string) error {
	g := &deckhousev1.NodeGroup{
		ObjectMeta: metav1.ObjectMeta{Name: nodeGroupName},
		Spec:       deckhousev1.NodeGroupSpec{NodeType: "Static"},
	}
	if profile != "" && profile != "off" {
		g.Spec.Fencing = &deckhousev1.FencingSpec{Mode: deckhousev1.FencingWatchdog,
			Watchdog: &deckhousev1.WatchdogSpec{Profile: deckhousev1.FencingProfile(profile)}}
	}
	if err := c.Create(ctx, g); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}
