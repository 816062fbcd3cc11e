package migrationcert

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/ferryvm/ferry/internal/migrationtls"
)

// Options configure the keeper of one node's certificate.
type Options struct {
	Client kubernetes.Interface
	Node   string
	// Dir is the node's credentials directory (<state dir>/migration-tls).
	Dir string
	// Duration is the validity asked for (0: migrationtls.DefaultDuration); the signer may
	// give less.
	Duration time.Duration
	// RetryMin and RetryMax bound the wait after a failed request (defaults 5s, 5m).
	RetryMin, RetryMax time.Duration
	Now                func() time.Time
	Log                logr.Logger
}

func (o *Options) defaults() {
	if o.Duration == 0 {
		o.Duration = migrationtls.DefaultDuration
	}
	if o.RetryMin == 0 {
		o.RetryMin = 5 * time.Second
	}
	if o.RetryMax == 0 {
		o.RetryMax = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// plan says when the node needs a new certificate, and why: now (or earlier) when it has
// none that serves it, else once two thirds of the current one's lifetime have passed.
func plan(c *migrationtls.Credentials, loadErr error, node string, now time.Time) (at time.Time, why string) {
	switch {
	case errors.Is(loadErr, migrationtls.ErrNoCredentials):
		return now, "the node has no migration certificate"
	case loadErr != nil:
		return now, loadErr.Error()
	}
	if err := c.Check(node, now); err != nil {
		return now, err.Error()
	}
	return migrationtls.RenewAt(c.Cert), "two thirds of the certificate's lifetime have passed"
}

// Run keeps the node's certificate until ctx ends.
func Run(ctx context.Context, o Options) {
	o.defaults()
	retry := o.RetryMin
	for {
		c, err := migrationtls.Load(o.Dir)
		at, why := plan(c, err, o.Node, o.Now())
		if wait := at.Sub(o.Now()); wait > 0 {
			o.Log.Info("Checked the migration certificate", "notAfter", c.Cert.NotAfter.UTC(), "renewAt", at.UTC())
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		c, err = request(ctx, o, why)
		if err == nil {
			err = migrationtls.Write(o.Dir, c)
		}
		if err == nil {
			o.Log.Info("Stored the node's new migration certificate", "dir", o.Dir, "notAfter", c.Cert.NotAfter.UTC())
			retry = o.RetryMin
			continue
		}
		if ctx.Err() != nil {
			return
		}
		o.Log.Error(err, "Could not get a migration certificate; until it has one, migrations to and from this node fail (with migration TLS) and its peers cannot confirm a control-plane outage to it", "retryIn", retry.String())
		if !sleep(ctx, retry) {
			return
		}
		retry = min(2*retry, o.RetryMax)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// request makes a new key, asks for its certificate (why: the reason, for the log) and
// waits until the signer answers.
func request(ctx context.Context, o Options, why string) (*migrationtls.Credentials, error) {
	keyPEM, csrPEM, err := migrationtls.NewRequest(o.Node)
	if err != nil {
		return nil, err
	}
	csrs := o.Client.CertificatesV1().CertificateSigningRequests()
	csr, err := csrs.Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "ferry-migration-" + o.Node + "-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           csrPEM,
			SignerName:        migrationtls.SignerName,
			Usages:            migrationtls.Usages[certificatesv1.KeyUsage](),
			ExpirationSeconds: ptr.To(int32(o.Duration / time.Second)),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("creating the certificate signing request: %w", err)
	}
	o.Log.Info("Created a certificate signing request", "csr", csr.Name, "signer", migrationtls.SignerName, "why", why)
	csr, err = await(ctx, o, csr)
	if err != nil {
		return nil, err
	}
	for _, c := range csr.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
			return nil, fmt.Errorf("certificate signing request %s %s: %s: %s", csr.Name, c.Type, c.Reason, c.Message)
		}
	}
	certPEM, caPEM := splitChain(csr.Status.Certificate)
	if len(caPEM) == 0 {
		return nil, fmt.Errorf("certificate signing request %s: the signer sent no CA certificate after the node's", csr.Name)
	}
	c, err := migrationtls.Parse(certPEM, keyPEM, caPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate signing request %s: %w", csr.Name, err)
	}
	if err := c.Check(o.Node, o.Now()); err != nil {
		return nil, fmt.Errorf("certificate signing request %s: %w", csr.Name, err)
	}
	return c, nil
}

// answered tells whether the signer has answered csr.
func answered(csr *certificatesv1.CertificateSigningRequest) bool {
	if len(csr.Status.Certificate) > 0 {
		return true
	}
	for _, c := range csr.Status.Conditions {
		if c.Status == corev1.ConditionTrue && (c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed) {
			return true
		}
	}
	return false
}

// await watches csr until the signer has answered it. A watch that ends is resumed; a
// request that disappears (garbage-collected while pending) is an error.
func await(ctx context.Context, o Options, csr *certificatesv1.CertificateSigningRequest) (*certificatesv1.CertificateSigningRequest, error) {
	csrs := o.Client.CertificatesV1().CertificateSigningRequests()
	byName := fields.OneTermEqualSelector("metadata.name", csr.Name).String()
	for {
		if answered(csr) {
			return csr, nil
		}
		w, err := csrs.Watch(ctx, metav1.ListOptions{FieldSelector: byName, ResourceVersion: csr.ResourceVersion})
		if err == nil {
			csr, err = follow(ctx, w, csr)
			w.Stop()
			if err != nil || answered(csr) {
				return csr, err
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// The watch ended or could not start: read the request again, then watch again.
		if !sleep(ctx, time.Second) {
			return nil, ctx.Err()
		}
		got, err := csrs.Get(ctx, csr.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("certificate signing request %s disappeared before the signer answered", csr.Name)
		case err == nil:
			csr = got
		}
	}
}

// follow reads w until csr is answered, deleted, or the watch ends.
func follow(ctx context.Context, w watch.Interface, csr *certificatesv1.CertificateSigningRequest) (*certificatesv1.CertificateSigningRequest, error) {
	for {
		select {
		case <-ctx.Done():
			return csr, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return csr, nil
			}
			got, isCSR := ev.Object.(*certificatesv1.CertificateSigningRequest)
			if !isCSR || got.Name != csr.Name {
				continue
			}
			if ev.Type == watch.Deleted {
				return csr, fmt.Errorf("certificate signing request %s was deleted before the signer answered", csr.Name)
			}
			csr = got
			if answered(csr) {
				return csr, nil
			}
		}
	}
}

// splitChain separates the first certificate of a PEM chain from the rest.
func splitChain(chain []byte) (first, rest []byte) {
	block, after := pem.Decode(chain)
	if block == nil {
		return nil, nil
	}
	return pem.EncodeToMemory(block), bytes.TrimSpace(after)
}
