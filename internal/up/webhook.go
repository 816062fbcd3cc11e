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
	"github.com/ferryvm/ferry/internal/controller/ipaddress"
	"github.com/ferryvm/ferry/internal/controller/vm"
	"github.com/ferryvm/ferry/internal/controller/vmclass"
)

// EvictionWebhookName is the ValidatingWebhookConfiguration that sends evictions of pods
// to the Ferry controller.
const EvictionWebhookName = "ferry-eviction"

// VMWebhookName is the ValidatingWebhookConfiguration that sends VirtualMachines (and
// their addresses and classes) to the Ferry controller, which refuses what cannot be
// theirs; and the MutatingWebhookConfiguration that sends it VirtualMachines being created,
// to which it gives the default class.
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
	for _, want := range []client.Object{evictionWebhook(port, caPEM), vmWebhook(port, caPEM), vmDefaultingWebhook(port, caPEM)} {
		kind, name := kindOf(want), want.GetName()
		have := want.DeepCopyObject().(client.Object)
		err := c.Get(ctx, client.ObjectKeyFromObject(want), have)
		found := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading the %s %s: %w", kind, name, err)
		}
		switch {
		case found && !registeredByUp(have):
			if register {
				return fmt.Errorf("the %s %s exists and is not ferry up's (deploy/base's?): ferry up would send its webhooks to its own controller instead; run ferry up with --no-controller beside that controller, or delete it", kind, name)
			}
			// Another controller's (deploy/base's): left to it.
		case !register && found:
			uid, rv := have.GetUID(), have.GetResourceVersion()
			err := c.Delete(ctx, have, client.Preconditions{UID: &uid, ResourceVersion: &rv})
			if client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("removing ferry up's %s %s of an earlier run: %w", kind, name, err)
			}
			say("Removed ferry up's %s %s of an earlier run: with --no-controller, the controller that runs registers its own", kind, name)
		case register:
			if err := createOrUpdate(ctx, c, want); err != nil {
				return fmt.Errorf("registering the %s %s: %w", kind, name, err)
			}
		}
	}
	return nil
}

// registeredByUp tells whether ferry up registered cfg: it carries ferry up's label, or
// (ferry up before that label) its old label with URL webhooks on loopback only, which
// neither deploy/base (Service webhooks) nor any cluster-wide install uses.
func registeredByUp(cfg client.Object) bool {
	if cfg.GetLabels()[LabelManagedBy] == ManagedByUp {
		return true
	}
	hooks := clientConfigs(cfg)
	if cfg.GetLabels()["app.kubernetes.io/name"] != "ferry" || len(hooks) == 0 {
		return false
	}
	for _, h := range hooks {
		if h.Service != nil || h.URL == nil || !strings.HasPrefix(*h.URL, "https://127.0.0.1:") {
			return false
		}
	}
	return true
}

// clientConfigs are where the webhooks of a validating or mutating configuration go.
func clientConfigs(cfg client.Object) []admissionregistrationv1.WebhookClientConfig {
	var out []admissionregistrationv1.WebhookClientConfig
	switch c := cfg.(type) {
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		for _, w := range c.Webhooks {
			out = append(out, w.ClientConfig)
		}
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		for _, w := range c.Webhooks {
			out = append(out, w.ClientConfig)
		}
	}
	return out
}

func kindOf(cfg client.Object) string {
	if _, ok := cfg.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
		return "MutatingWebhookConfiguration"
	}
	return "ValidatingWebhookConfiguration"
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

// vmSpecChanged matches the creates of VMs and the updates that change their spec.
var vmSpecChanged = admissionregistrationv1.MatchCondition{Name: "spec-changed", Expression: "request.operation != 'UPDATE' || object.spec != oldObject.spec"}

// vmWebhook points the apiserver's VirtualMachine creates and updates at the controller.
// It fails closed: no VM is stored unchecked.
func vmWebhook(port int, caPEM []byte) *admissionregistrationv1.ValidatingWebhookConfiguration {
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, vm.WebhookPath)
	ipURL := fmt.Sprintf("https://127.0.0.1:%d%s", port, ipaddress.WebhookPath)
	classURL := fmt.Sprintf("https://127.0.0.1:%d%s", port, vmclass.WebhookPath)
	ops := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: VMWebhookName, Labels: upLabels()},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "virtualmachine.virtualization.ferryvm.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			Rules:        []admissionregistrationv1.RuleWithOperations{{Operations: ops, Rule: admissionregistrationv1.Rule{APIGroups: []string{"virtualization.deckhouse.io"}, APIVersions: []string{"v1alpha2"}, Resources: []string{"virtualmachines"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)}}},
			// A VM being deleted is not checked: removing its finalizer must not wait for
			// the controller. Nor is an update that leaves the spec as it was (the
			// controller's annotations and finalizer): the webhook checks only the spec, and
			// the fencing token a restart after a failover writes would wait on its round trip.
			MatchConditions: []admissionregistrationv1.MatchCondition{
				{Name: "not-being-deleted", Expression: "!has(object.metadata.deletionTimestamp)"},
				{Name: vmSpecChanged.Name, Expression: vmSpecChanged.Expression},
			},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}, {
			// VirtualMachineIPAddresses (a Static address outside the range or held by
			// another, a bound one's address changed), on the same terms.
			Name:                    "virtualmachineipaddress.virtualization.ferryvm.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &ipURL, CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: ops, Rule: admissionregistrationv1.Rule{APIGroups: []string{"virtualization.deckhouse.io"}, APIVersions: []string{"v1alpha2"}, Resources: []string{"virtualmachineipaddresses"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)}}},
			MatchConditions:         []admissionregistrationv1.MatchCondition{{Name: "not-being-deleted", Expression: "!has(object.metadata.deletionTimestamp)"}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}, {
			// VirtualMachineClasses: one default class at most.
			Name:                    "virtualmachineclass.virtualization.ferryvm.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &classURL, CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: ops, Rule: admissionregistrationv1.Rule{APIGroups: []string{"virtualization.deckhouse.io"}, APIVersions: []string{"v1alpha2"}, Resources: []string{"virtualmachineclasses"}, Scope: ptr.To(admissionregistrationv1.ClusterScope)}}},
			MatchConditions:         []admissionregistrationv1.MatchCondition{{Name: "not-being-deleted", Expression: "!has(object.metadata.deletionTimestamp)"}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
}

// vmDefaultingWebhook points the apiserver's VirtualMachine creates at the controller,
// which names the default class in a VM that names none. The apiserver calls it before
// the validating webhooks, which so check the VM against that class. It fails closed, as
// the validating one: a VM is not stored without the class it was meant to get.
func vmDefaultingWebhook(port int, caPEM []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, vm.DefaultingPath)
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: VMWebhookName, Labels: upLabels()},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "virtualmachine.virtualization.ferryvm.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{"virtualization.deckhouse.io"}, APIVersions: []string{"v1alpha2"}, Resources: []string{"virtualmachines"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)}}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](10),
		}},
	}
}
