package up

import (
	"context"
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryvm/ferry/internal/controller/evacuation"
	"github.com/ferryvm/ferry/internal/controller/vm"
)

// EvictionWebhookName is the ValidatingWebhookConfiguration that sends evictions of pods
// to the Ferry controller.
const EvictionWebhookName = "ferry-eviction"

// VMWebhookName is the ValidatingWebhookConfiguration that sends VirtualMachines to the
// Ferry controller, which refuses addresses that cannot be theirs.
const VMWebhookName = "ferry-virtualmachine"

// deploy/base's webhook configurations have the same names (Service webhooks to the
// controller's Deployment). ferry up marks its own URL webhooks with this label, which
// deploy/base never sets, and touches no configuration without it.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByUp    = "ferry-up"
)

// webhookPort is where the controller serves admission webhooks under ferry up.
func webhookPort(apiPort int) int { return apiPort + 2002 }

// setupWebhooks registers ferry up's webhooks to the controller it runs (register), or,
// when another controller runs (--no-controller: e.g. deploy/base's, whose webhook
// configurations have the same names), registers none and removes those an earlier run
// of ferry up left: they would send every eviction and VM to a controller that is not
// there, and fail closed. Configurations that are not ferry up's are left alone; with
// register, ferry up refuses to take over one of them.
func setupWebhooks(ctx context.Context, c client.Client, register bool, port int, caPEM []byte, say func(string, ...any)) error {
	for _, want := range []*admissionregistrationv1.ValidatingWebhookConfiguration{evictionWebhook(port, caPEM), vmWebhook(port, caPEM)} {
		var have admissionregistrationv1.ValidatingWebhookConfiguration
		err := c.Get(ctx, client.ObjectKeyFromObject(want), &have)
		found := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading the webhook configuration %s: %w", want.Name, err)
		}
		switch {
		case found && !registeredByUp(&have):
			if register {
				return fmt.Errorf("the ValidatingWebhookConfiguration %s exists and is not ferry up's (deploy/base's?): ferry up would send its webhooks to its own controller instead; run ferry up with --no-controller beside that controller, or delete it", want.Name)
			}
			// Another controller's (deploy/base's): left to it.
		case !register && found:
			err := c.Delete(ctx, &have, client.Preconditions{UID: &have.UID, ResourceVersion: &have.ResourceVersion})
			if client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("removing ferry up's webhook configuration %s of an earlier run: %w", want.Name, err)
			}
			say("Removed ferry up's webhook configuration %s of an earlier run: with --no-controller, the controller that runs registers its own", want.Name)
		case register:
			if err := createOrUpdate(ctx, c, want); err != nil {
				return fmt.Errorf("registering the webhook configuration %s: %w", want.Name, err)
			}
		}
	}
	return nil
}

// registeredByUp tells whether ferry up registered cfg: it carries ferry up's label, or
// (ferry up before that label) its old label with URL webhooks on loopback only, which
// neither deploy/base (Service webhooks) nor any cluster-wide install uses.
func registeredByUp(cfg *admissionregistrationv1.ValidatingWebhookConfiguration) bool {
	if cfg.Labels[LabelManagedBy] == ManagedByUp {
		return true
	}
	if cfg.Labels["app.kubernetes.io/name"] != "ferry" || len(cfg.Webhooks) == 0 {
		return false
	}
	for _, w := range cfg.Webhooks {
		if w.ClientConfig.Service != nil || w.ClientConfig.URL == nil || !strings.HasPrefix(*w.ClientConfig.URL, "https://127.0.0.1:") {
			return false
		}
	}
	return true
}

func upLabels() map[string]string {
	return map[string]string{"app.kubernetes.io/name": "ferry", LabelManagedBy: ManagedByUp}
}

// evictionWebhook points the apiserver's pod evictions at the controller. It fails
// closed: while the controller is down, evictions are refused rather than VMs killed.
func evictionWebhook(port int, caPEM []byte) *admissionregistrationv1.ValidatingWebhookConfiguration {
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, evacuation.WebhookPath)
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: EvictionWebhookName, Labels: upLabels()},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "eviction.virtualization.ferryvm.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods/eviction"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)}}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
}

// vmWebhook points the apiserver's VirtualMachine creates and updates at the controller.
// It fails closed: no VM is stored unchecked.
func vmWebhook(port int, caPEM []byte) *admissionregistrationv1.ValidatingWebhookConfiguration {
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, vm.WebhookPath)
	ops := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: VMWebhookName, Labels: upLabels()},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "virtualmachine.virtualization.ferryvm.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			Rules:        []admissionregistrationv1.RuleWithOperations{{Operations: ops, Rule: admissionregistrationv1.Rule{APIGroups: []string{"virtualization.deckhouse.io"}, APIVersions: []string{"v1alpha2"}, Resources: []string{"virtualmachines"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)}}},
			// A VM being deleted is not checked: removing its finalizer must not wait for
			// the controller.
			MatchConditions:         []admissionregistrationv1.MatchCondition{{Name: "not-being-deleted", Expression: "!has(object.metadata.deletionTimestamp)"}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
}
