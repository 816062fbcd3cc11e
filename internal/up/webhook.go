package up

import (
	"context"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryvm/ferry/internal/controller/evacuation"
	"github.com/ferryvm/ferry/internal/controller/vm"
)

// EvictionWebhookName is the ValidatingWebhookConfiguration that sends evictions of pods
// to the Ferry controller.
const EvictionWebhookName = "ferry-eviction"

// webhookPort is where the controller serves admission webhooks under ferry up.
func webhookPort(apiPort int) int { return apiPort + 2002 }

// registerEvictionWebhook points the apiserver's pod evictions at the controller. It fails
// closed: while the controller is down, evictions are refused rather than VMs killed.
func registerEvictionWebhook(ctx context.Context, c client.Client, port int, caPEM []byte) error {
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, evacuation.WebhookPath)
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: EvictionWebhookName, Labels: map[string]string{"app.kubernetes.io/name": "ferry"}},
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
	return createOrUpdate(ctx, c, cfg)
}

// VMWebhookName is the ValidatingWebhookConfiguration that sends VirtualMachines to the
// Ferry controller, which refuses addresses that cannot be theirs.
const VMWebhookName = "ferry-virtualmachine"

// registerVMWebhook points the apiserver's VirtualMachine creates and updates at the
// controller. It fails closed: no VM is stored unchecked.
func registerVMWebhook(ctx context.Context, c client.Client, port int, caPEM []byte) error {
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, vm.WebhookPath)
	ops := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: VMWebhookName, Labels: map[string]string{"app.kubernetes.io/name": "ferry"}},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "virtualmachine.virtualization.ferryvm.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: ops, Rule: admissionregistrationv1.Rule{APIGroups: []string{"virtualization.deckhouse.io"}, APIVersions: []string{"v1alpha2"}, Resources: []string{"virtualmachines"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)}}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
	return createOrUpdate(ctx, c, cfg)
}
