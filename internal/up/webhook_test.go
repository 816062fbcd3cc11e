package up

import (
	"context"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// baseWebhook is a webhook configuration as deploy/base has it: the same name as ferry
// up's, a Service webhook, kustomize's part-of label.
func baseWebhook(name string) *admissionregistrationv1.ValidatingWebhookConfiguration {
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "ferry"}},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "x.virtualization.ferryvm.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
				Namespace: "ferry-system", Name: "ferry-controller-webhook", Path: ptr.To("/x")}},
		}},
	}
}

// legacyWebhook is one that ferry up registered before it had its managed-by label.
func legacyWebhook(name string) *admissionregistrationv1.ValidatingWebhookConfiguration {
	return &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": "ferry"}},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:         "x.virtualization.ferryvm.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:8445/x")},
		}},
	}
}

// baseMutating is deploy/base's MutatingWebhookConfiguration of the same name as ferry up's.
func baseMutating(name string) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "ferry"}},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "x.virtualization.ferryvm.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
				Namespace: "ferry-system", Name: "ferry-controller-webhook", Path: ptr.To("/x")}},
		}},
	}
}

// mutatingVM is the key of ferry up's MutatingWebhookConfiguration in webhookState.
const mutatingVM = "mutating " + VMWebhookName

func webhookClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
}

// webhookState is each of ferry up's three configurations (two validating, one mutating,
// key mutatingVM): "up" (ferry up's), "other" (not ferry up's) or "none".
func webhookState(t *testing.T, c client.Client) map[string]string {
	t.Helper()
	out := map[string]string{}
	for key, cfg := range map[string]client.Object{
		EvictionWebhookName: &admissionregistrationv1.ValidatingWebhookConfiguration{},
		VMWebhookName:       &admissionregistrationv1.ValidatingWebhookConfiguration{},
		mutatingVM:          &admissionregistrationv1.MutatingWebhookConfiguration{},
	} {
		err := c.Get(context.Background(), client.ObjectKey{Name: strings.TrimPrefix(key, "mutating ")}, cfg)
		switch {
		case apierrors.IsNotFound(err):
			out[key] = "none"
		case err != nil:
			t.Fatal(err)
		case cfg.GetLabels()[LabelManagedBy] == ManagedByUp:
			out[key] = "up"
		default:
			out[key] = "other"
		}
	}
	return out
}

// TestWebhooks: ferry up registers its URL webhooks, marked as its own, when it runs the
// controller; with --no-controller it registers none, removes its own of an earlier run
// (also those of a ferry up before the mark) and leaves deploy/base's, of the same names,
// alone; running its controller, it refuses to take deploy/base's over.
func TestWebhooks(t *testing.T) {
	ctx := context.Background()
	var said []string
	say := func(f string, _ ...any) { said = append(said, f) }
	both := func(s string) map[string]string {
		return map[string]string{EvictionWebhookName: s, VMWebhookName: s, mutatingVM: s}
	}
	check := func(c client.Client, want map[string]string) {
		t.Helper()
		got := webhookState(t, c)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s, want %s", k, got[k], v)
			}
		}
	}

	// Stand-in mode: registered, and again on a restart (updated in place).
	c := webhookClient(t)
	for range 2 {
		if err := setupWebhooks(ctx, c, true, 8445, []byte("ca"), say); err != nil {
			t.Fatal(err)
		}
		check(c, both("up"))
	}
	// --no-controller after that run: ferry up's go.
	if err := setupWebhooks(ctx, c, false, 8445, []byte("ca"), say); err != nil {
		t.Fatal(err)
	}
	check(c, both("none"))
	if len(said) != 3 {
		t.Errorf("said %q, want one line per removed configuration", said)
	}

	// --no-controller beside deploy/base's: left alone.
	c = webhookClient(t, baseWebhook(EvictionWebhookName), baseWebhook(VMWebhookName), baseMutating(VMWebhookName))
	if err := setupWebhooks(ctx, c, false, 8445, nil, say); err != nil {
		t.Fatal(err)
	}
	check(c, both("other"))
	// ferry up with its controller does not take them over.
	err := setupWebhooks(ctx, c, true, 8445, nil, say)
	if err == nil || !strings.Contains(err.Error(), "--no-controller") {
		t.Errorf("registering over deploy/base's webhooks: %v, want a refusal that names --no-controller", err)
	}
	check(c, both("other"))

	// A leftover of a ferry up before the mark goes too; deploy/base's beside it stays.
	c = webhookClient(t, legacyWebhook(EvictionWebhookName), baseWebhook(VMWebhookName))
	if err := setupWebhooks(ctx, c, false, 8445, nil, say); err != nil {
		t.Fatal(err)
	}
	check(c, map[string]string{EvictionWebhookName: "none", VMWebhookName: "other", mutatingVM: "none"})
}

// TestRegisteredByUp: only ferry up's mark, or its old label on loopback URL webhooks,
// makes a configuration ferry up's.
func TestRegisteredByUp(t *testing.T) {
	withService := legacyWebhook("a")
	withService.Webhooks = append(withService.Webhooks, baseWebhook("a").Webhooks...)
	remote := legacyWebhook("a")
	remote.Webhooks[0].ClientConfig.URL = ptr.To("https://webhook.example:443/x")
	for _, tc := range []struct {
		name string
		cfg  client.Object
		want bool
	}{
		{"ferry up's", evictionWebhook(1, nil), true},
		{"ferry up's mutating", vmDefaultingWebhook(1, nil), true},
		{"deploy/base's mutating", baseMutating("a"), false},
		{"ferry up's before the mark", legacyWebhook("a"), true},
		{"deploy/base's", baseWebhook("a"), false},
		{"old label, a Service webhook among them", withService, false},
		{"old label, a URL elsewhere", remote, false},
	} {
		if got := registeredByUp(tc.cfg); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
