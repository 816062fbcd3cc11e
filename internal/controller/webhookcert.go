package controller

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryvm/ferry/internal/webhookcert"
)

// Where the admission webhooks' certificate comes from (WebhookOptions.CertMode).
const (
	// CertModeFiles: it is in CertDir, provided by someone else (cert-manager, ferry up's
	// control plane); the webhook server reloads it when the files change.
	CertModeFiles = "files"
	// CertModeSelf: the controller issues it from a CA it keeps in a Secret, sets the
	// caBundle of the webhook configurations, and rotates both (internal/webhookcert).
	CertModeSelf = "self"
)

// primeTimeout bounds the wait for the first certificate: an apiserver that answers no
// request in that time, or a refusal, ends the controller with the reason.
const primeTimeout = time.Minute

// selfManagedCerts issues this replica's first certificate (the webhook server reads it
// when it starts, before the manager runs anything else) and returns the Runnable that
// keeps it. The client is uncached: a cached Secret read would watch every Secret.
func selfManagedCerts(ctx context.Context, cfg *rest.Config, o WebhookOptions) (*webhookcert.Rotator, error) {
	c, err := client.New(cfg, client.Options{Scheme: NewScheme()})
	if err != nil {
		return nil, err
	}
	certs := o.Certs
	certs.CertDir, certs.CertName, certs.KeyName = o.CertDir, o.CertName, o.KeyName
	r, err := webhookcert.New(c, certs)
	if err != nil {
		return nil, err
	}
	if err := r.Prime(ctx, primeTimeout); err != nil {
		return nil, fmt.Errorf("preparing the webhooks' certificate (--webhook-cert-mode %s): %w", CertModeSelf, err)
	}
	return r, nil
}
