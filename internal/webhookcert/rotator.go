package webhookcert

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ferryvm/ferry/internal/pki"
)

// Defaults of the options.
const (
	DefaultCASecret     = "ferry-webhook-ca"
	DefaultCertValidity = 30 * 24 * time.Hour
	DefaultCAValidity   = 365 * 24 * time.Hour
	DefaultResync       = 10 * time.Second
	// MinValidity is the shortest lifetime allowed (tests use a few seconds).
	MinValidity = 5 * time.Second
)

// retrySoon is the wait after a conflict: another replica wrote first; read again.
const retrySoon = 500 * time.Millisecond

// Options say which CA Secret, certificate and webhook configurations a Rotator keeps.
type Options struct {
	// Namespace holds the CA Secret and the webhooks' Service.
	Namespace string
	// Service is the webhooks' Service: the certificate is for <Service>.<Namespace>.svc
	// and <Service>.<Namespace>.svc.cluster.local ("": only Hosts).
	Service string
	// CASecret is the Secret that holds the CA.
	CASecret string
	// Hosts are more DNS names or IP addresses for the certificate, e.g. 127.0.0.1 where
	// the apiserver calls the webhooks by URL (ferry up).
	Hosts []string
	// ValidatingWebhooks and MutatingWebhooks name the configurations whose caBundle is kept.
	ValidatingWebhooks []string
	MutatingWebhooks   []string
	// CertValidity is the life of a serving certificate, CAValidity a CA's.
	CertValidity time.Duration
	CAValidity   time.Duration
	// CertDir, CertName and KeyName are where the webhook server reads its certificate.
	CertDir  string
	CertName string
	KeyName  string
	// Resync is the longest wait between two passes: a configuration created later, or
	// whose caBundle someone else changed, is set within it.
	Resync time.Duration
}

// Rotator keeps the CA, the caBundles and this replica's serving certificate. It is a
// controller-runtime Runnable that every replica runs (no leader election).
type Rotator struct {
	c client.Client
	o Options
	// hosts are the certificate's names in the order it lists them; sortedHosts compare.
	hosts, sortedHosts []string
	now                func() time.Time
}

// New checks the options and fills in defaults. c must not read from a cache: a cached
// Secret read would have the manager watch every Secret of the cluster.
func New(c client.Client, o Options) (*Rotator, error) {
	if o.Namespace == "" || o.CertDir == "" || o.CertName == "" || o.KeyName == "" {
		return nil, errors.New("webhook certificates: the namespace and the certificate directory and file names are required")
	}
	if o.CASecret == "" {
		o.CASecret = DefaultCASecret
	}
	if o.CertValidity == 0 {
		o.CertValidity = DefaultCertValidity
	}
	if o.CAValidity == 0 {
		o.CAValidity = DefaultCAValidity
	}
	if o.Resync == 0 {
		o.Resync = DefaultResync
	}
	if o.CertValidity < MinValidity || o.CAValidity < MinValidity {
		return nil, fmt.Errorf("webhook certificates: validity %s (serving) and %s (CA) must be %s or more", o.CertValidity, o.CAValidity, MinValidity)
	}
	var hosts []string
	if o.Service != "" {
		svc := o.Service + "." + o.Namespace + ".svc"
		hosts = append(hosts, svc, svc+".cluster.local")
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			h = ip.String()
		}
		if h != "" && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return nil, errors.New("webhook certificates: no host to issue the certificate for (a Service or hosts)")
	}
	sorted := slices.Sorted(slices.Values(hosts))
	return &Rotator{c: c, o: o, hosts: hosts, sortedHosts: sorted, now: time.Now}, nil
}

// NeedLeaderElection is false: every replica serves the webhooks with its own certificate.
func (r *Rotator) NeedLeaderElection() bool { return false }

// Prime makes passes until one succeeds or timeout passes: the webhook server reads the
// certificate when it starts, so it must be there first.
func (r *Rotator) Prime(ctx context.Context, timeout time.Duration) error {
	ctx = log.IntoContext(ctx, log.FromContext(ctx).WithName("webhook-cert"))
	var last error
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		_, last = r.Sync(ctx)
		if last != nil {
			log.FromContext(ctx).Info("Could not prepare the webhook certificate yet", "error", last.Error())
		}
		return last == nil, nil
	})
	if err != nil && last != nil {
		return last
	}
	return err
}

// Start makes a pass whenever the schedule or Resync says, until ctx ends.
func (r *Rotator) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("webhook-cert")
	ctx = log.IntoContext(ctx, logger)
	backoff := time.Second
	for {
		wake, err := r.Sync(ctx)
		wait := wake.Sub(r.now())
		if err != nil {
			logger.Error(err, "Failed to keep the webhook certificate; retrying", "in", backoff)
			wait, backoff = backoff, min(2*backoff, r.o.Resync)
		} else {
			backoff = time.Second
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Sync makes one pass: it reads (or creates) the CA, publishes its bundle, takes the CA a
// step along its schedule, and renews this replica's certificate if due. It returns when
// the next pass is due. The bundle is published before anything signs with a CA in it.
func (r *Rotator) Sync(ctx context.Context) (time.Time, error) {
	now := r.now()
	wake := now.Add(r.o.Resync)
	sec, s, err := r.readCA(ctx, now)
	if err != nil {
		return wake, err
	}
	published, pubErr := r.publish(ctx, s.bundle(now))
	advanced, step, err := s.advance(now, published, func() (pki.CA, error) { return newAuthority(now, r.o.CAValidity) })
	if err != nil {
		return wake, err
	}
	if step != "" {
		advanced.encode(sec)
		if err := r.c.Update(ctx, sec); err != nil {
			if apierrors.IsConflict(err) {
				return now.Add(retrySoon), nil
			}
			return wake, fmt.Errorf("updating the webhook CA Secret %s/%s: %w", sec.Namespace, sec.Name, err)
		}
		log.FromContext(ctx).Info("Advanced the webhook CA", "step", step, "signer", advanced.signer.Cert.Subject.CommonName, "signerNotAfter", advanced.signer.Cert.NotAfter)
		s = advanced
		published, pubErr = r.publish(ctx, s.bundle(now))
	}
	renew, err := r.ensureServing(ctx, s.signer, now)
	if err != nil {
		return wake, errors.Join(pubErr, err)
	}
	if pubErr != nil {
		return wake, pubErr
	}
	if !published {
		wake = now.Add(retrySoon)
	}
	return minTime(wake, minTime(renew, s.nextEvent())), nil
}

// readCA reads the CA Secret, creating it (or filling it, if it is empty) with a new CA
// that keeps trusting what the caBundles trust (trustedNow). Of two replicas that create
// it at once, one gets AlreadyExists and reads the other's.
func (r *Rotator) readCA(ctx context.Context, now time.Time) (*corev1.Secret, caState, error) {
	key := client.ObjectKey{Namespace: r.o.Namespace, Name: r.o.CASecret}
	for range 3 {
		sec := &corev1.Secret{}
		err := r.c.Get(ctx, key, sec)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, caState{}, fmt.Errorf("reading the webhook CA Secret %s: %w", key, err)
		}
		if err == nil {
			s, ok, err := decodeState(sec)
			if err != nil {
				return nil, caState{}, fmt.Errorf("the webhook CA Secret %s: %w (delete it to start over with a new CA)", key, err)
			}
			if ok {
				return sec, s, nil
			}
		}
		ca, err := newAuthority(now, r.o.CAValidity)
		if err != nil {
			return nil, caState{}, err
		}
		s := caState{signer: ca, retired: r.trustedNow(ctx, now)}
		if sec.ResourceVersion == "" {
			sec = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: map[string]string{"app.kubernetes.io/part-of": "ferry"}},
				Type:       corev1.SecretTypeOpaque,
			}
			s.encode(sec)
			err = r.c.Create(ctx, sec)
		} else {
			s.encode(sec)
			err = r.c.Update(ctx, sec)
		}
		switch {
		case apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err):
			continue // another replica was first: read its CA
		case err != nil:
			return nil, caState{}, fmt.Errorf("creating the webhook CA Secret %s: %w", key, err)
		}
		log.FromContext(ctx).Info("Created the webhook CA", "secret", key.String(), "ca", ca.Cert.Subject.CommonName, "notAfter", ca.Cert.NotAfter,
			"keptTrusted", len(s.retired))
		return sec, s, nil
	}
	return nil, caState{}, fmt.Errorf("the webhook CA Secret %s keeps changing under this replica", key)
}

// ensureServing renews this replica's certificate if due and tells when it is due next.
func (r *Rotator) ensureServing(ctx context.Context, signer pki.CA, now time.Time) (time.Time, error) {
	certPEM, keyPEM, err := readPair(r.o.CertDir, r.o.CertName, r.o.KeyName)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the webhook certificate: %w", err)
	}
	due, why, at := servingDue(certPEM, keyPEM, signer.Cert, r.sortedHosts, now)
	if !due {
		return at, nil
	}
	certPEM, keyPEM, err = issueServing(signer, r.hosts, now, r.o.CertValidity)
	if err != nil {
		return time.Time{}, fmt.Errorf("issuing the webhook certificate: %w", err)
	}
	if err := writePair(r.o.CertDir, r.o.CertName, r.o.KeyName, certPEM, keyPEM); err != nil {
		return time.Time{}, fmt.Errorf("writing the webhook certificate: %w", err)
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		return time.Time{}, err
	}
	log.FromContext(ctx).Info("Issued the webhook serving certificate", "reason", why, "ca", signer.Cert.Subject.CommonName,
		"hosts", r.hosts, "notAfter", certs[0].NotAfter)
	return renewAt(certs[0]), nil
}
