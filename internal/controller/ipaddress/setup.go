package ipaddress

import (
	"context"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/ferryvm/ferry/internal/ipam"
)

// Setup registers the indexes, both controllers and, when the manager serves webhooks,
// the VirtualMachineIPAddress webhook. retention 0 is DefaultRetention.
func Setup(ctx context.Context, mgr ctrl.Manager, r ipam.Ranges, retention time.Duration, webhooks bool) error {
	if err := Index(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	if err := (&Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmip-controller"), Ranges: r, APIReader: mgr.GetAPIReader()}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&LeaseReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmipl-controller"), Retention: retention}).SetupWithManager(mgr); err != nil {
		return err
	}
	if webhooks {
		mgr.GetWebhookServer().Register(WebhookPath, &webhook.Admission{Handler: &Webhook{APIReader: mgr.GetAPIReader(), Ranges: r, Decoder: admission.NewDecoder(mgr.GetScheme())}})
	}
	return nil
}
