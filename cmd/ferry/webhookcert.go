package main

import (
	"github.com/spf13/pflag"

	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/webhookcert"
)

// webhookCertFlags are the controller's flags for where its webhooks' certificate comes from.
func webhookCertFlags(f *pflag.FlagSet, o *controller.WebhookOptions) {
	c := &o.Certs
	f.StringVar(&o.CertMode, "webhook-cert-mode", controller.CertModeFiles, "files: the serving certificate is provided in --webhook-cert-dir (e.g. by cert-manager) and reloaded when it changes; self: the controller issues it from a CA it keeps in the Secret --webhook-ca-secret, writes it into --webhook-cert-dir, sets the caBundle of --webhook-configurations, and rotates both")
	f.StringVar(&c.Namespace, "webhook-namespace", "ferry-system", "namespace of the webhooks' Service and of the CA Secret (self mode)")
	f.StringVar(&c.Service, "webhook-service", "ferry-controller-webhook", "Service the apiserver calls the webhooks through: the certificate is for <service>.<namespace>.svc[.cluster.local] (self mode; empty: only --webhook-cert-hosts)")
	f.StringVar(&c.CASecret, "webhook-ca-secret", webhookcert.DefaultCASecret, "Secret in --webhook-namespace that holds the webhooks' CA, created if missing (self mode)")
	f.StringSliceVar(&c.Hosts, "webhook-cert-hosts", nil, "more DNS names or IP addresses for the certificate, e.g. 127.0.0.1 where the apiserver calls the webhooks by URL (self mode)")
	f.StringSliceVar(&c.ValidatingWebhooks, "webhook-configurations", []string{"ferry-eviction", "ferry-virtualmachine"}, "ValidatingWebhookConfigurations whose caBundle the controller sets (self mode)")
	f.StringSliceVar(&c.MutatingWebhooks, "webhook-mutating-configurations", []string{"ferry-virtualmachine"}, "MutatingWebhookConfigurations whose caBundle the controller sets (self mode)")
	f.DurationVar(&c.CertValidity, "webhook-cert-validity", webhookcert.DefaultCertValidity, "life of a serving certificate, renewed after two thirds of it (self mode)")
	f.DurationVar(&c.CAValidity, "webhook-ca-validity", webhookcert.DefaultCAValidity, "life of the webhooks' CA: after two thirds of it a next CA joins the caBundles, after five sixths it signs, and the old one stays trusted until it ends (self mode)")
}
