package webhookcert

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ferryvm/ferry/internal/pki"
)

// configuration is one webhook configuration, validating or mutating.
type configuration struct {
	obj client.Object
	// caBundles are the caBundle fields of its webhooks, as last read into obj.
	caBundles func() []*[]byte
}

// configurations are the webhook configurations named in the options.
func (r *Rotator) configurations() []configuration {
	var out []configuration
	for _, name := range r.o.ValidatingWebhooks {
		v := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}
		out = append(out, configuration{v, func() []*[]byte {
			var b []*[]byte
			for i := range v.Webhooks {
				b = append(b, &v.Webhooks[i].ClientConfig.CABundle)
			}
			return b
		}})
	}
	for _, name := range r.o.MutatingWebhooks {
		m := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}
		out = append(out, configuration{m, func() []*[]byte {
			var b []*[]byte
			for i := range m.Webhooks {
				b = append(b, &m.Webhooks[i].ClientConfig.CABundle)
			}
			return b
		}})
	}
	return out
}

// publish sets the caBundle of every webhook of the named configurations to bundle. It
// tells whether all of them hold it now; a configuration that does not exist is skipped
// (nothing calls it). A conflict (another replica wrote first) leaves published false
// without an error: the next pass reads again.
func (r *Rotator) publish(ctx context.Context, bundle []byte) (published bool, err error) {
	published = true
	for _, c := range r.configurations() {
		ok, err := r.publishTo(ctx, c, bundle)
		if err != nil {
			return false, err
		}
		published = published && ok
	}
	return published, nil
}

func (r *Rotator) publishTo(ctx context.Context, c configuration, bundle []byte) (bool, error) {
	name := c.obj.GetName()
	if err := r.c.Get(ctx, client.ObjectKey{Name: name}, c.obj); err != nil {
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("reading webhook configuration %s: %w", name, err)
	}
	changed := false
	for _, b := range c.caBundles() {
		if !bytes.Equal(*b, bundle) {
			*b = bundle
			changed = true
		}
	}
	if !changed {
		return true, nil
	}
	// An update on the resourceVersion read: a concurrent change is not overwritten.
	if err := r.c.Update(ctx, c.obj); err != nil {
		if apierrors.IsConflict(err) {
			return false, nil
		}
		return false, fmt.Errorf("setting the caBundle of webhook configuration %s: %w", name, err)
	}
	cas, _ := pki.ParseCerts(bundle)
	log.FromContext(ctx).Info("Set the caBundle of a webhook configuration", "configuration", name, "kind", kindOf(c.obj), "cas", len(cas))
	return true, nil
}

func kindOf(obj client.Object) string {
	if _, ok := obj.(*admissionregistrationv1.MutatingWebhookConfiguration); ok {
		return "MutatingWebhookConfiguration"
	}
	return "ValidatingWebhookConfiguration"
}

// trustedNow are the certificates the configurations' caBundles trust now and will until
// they end: a new CA adopts them, so that certificates still served from them (a CA whose
// Secret was deleted, or cert-manager's before a switch to self mode) stay trusted while
// the replicas move to the new one. A configuration that cannot be read adds nothing.
func (r *Rotator) trustedNow(ctx context.Context, now time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range r.configurations() {
		if err := r.c.Get(ctx, client.ObjectKey{Name: c.obj.GetName()}, c.obj); err != nil {
			continue
		}
		for _, b := range c.caBundles() {
			certs, _ := pki.ParseCerts(*b)
			for _, cert := range certs {
				if now.Before(cert.NotAfter) && !slices.ContainsFunc(out, cert.Equal) {
					out = append(out, cert)
				}
			}
		}
	}
	return out
}
