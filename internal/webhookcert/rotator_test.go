package webhookcert

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/ferryvm/ferry/internal/pki"
)

// The fake client stands in for the apiserver here to drive a clock through three CA
// lifetimes in milliseconds; test/deploy runs the same on a real apiserver and real TLS.

const testNS = "ferry-system"

func newClient(t *testing.T, funcs *interceptor.Funcs) client.WithWatch {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	hook := func(name string) *admissionregistrationv1.ValidatingWebhookConfiguration {
		return &admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "a." + name + ".io"}, {Name: "b." + name + ".io"}},
		}
	}
	b := fake.NewClientBuilder().WithScheme(s).WithObjects(hook("ferry-eviction"), hook("ferry-virtualmachine"))
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	return b.Build()
}

// replica is one controller replica's rotator, on a clock the test moves.
func replica(t *testing.T, c client.Client, clock *time.Time, certValidity, caValidity time.Duration) *Rotator {
	t.Helper()
	r, err := New(c, Options{
		Namespace: testNS, Service: "ferry-controller-webhook", Hosts: []string{"127.0.0.1"},
		ValidatingWebhooks: []string{"ferry-eviction", "ferry-virtualmachine", "absent"},
		CertValidity:       certValidity, CAValidity: caValidity,
		CertDir: t.TempDir(), CertName: "tls.crt", KeyName: "tls.key",
		// Passes come when the schedule says; a long Resync leaves it to the schedule.
		Resync: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.now = func() time.Time { return *clock }
	return r
}

// served is the certificate a replica's webhook server would read now.
func served(t *testing.T, r *Rotator) *x509.Certificate {
	t.Helper()
	certPEM, _, err := readPair(r.o.CertDir, r.o.CertName, r.o.KeyName)
	if err != nil || certPEM == nil {
		t.Fatalf("no certificate in %s: %v", r.o.CertDir, err)
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

// trustedBy tells whether the apiserver, holding the caBundle of every configuration as it
// is now, accepts c for the Service's name.
func trustedBy(ctx context.Context, c client.Client, cert *x509.Certificate, now time.Time) error {
	for _, name := range []string{"ferry-eviction", "ferry-virtualmachine"} {
		var cfg admissionregistrationv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &cfg); err != nil {
			return err
		}
		for _, w := range cfg.Webhooks {
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(w.ClientConfig.CABundle) {
				return fmt.Errorf("%s/%s: empty caBundle", name, w.Name)
			}
			_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "ferry-controller-webhook.ferry-system.svc", CurrentTime: now})
			if err != nil {
				return fmt.Errorf("%s/%s: %w", name, w.Name, err)
			}
		}
	}
	return nil
}

// TestTwoReplicasThroughCARotations runs two replicas on one clock through three CA
// lifetimes, each making its passes when its schedule says (and some more), and checks
// after every pass that the certificate each replica serves is trusted by every caBundle,
// that a CA is in the bundles for a sixth of its predecessor's life before a replica
// serves a certificate from it, and that both end on the same CA.
func TestTwoReplicasThroughCARotations(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, nil)
	clock := t0
	const caLife, certLife = 60 * time.Minute, 9 * time.Minute
	a, b := replica(t, c, &clock, certLife, caLife), replica(t, c, &clock, certLife, caLife)
	wake := map[*Rotator]time.Time{a: clock, b: clock.Add(time.Second)}
	firstBundled, firstServed := map[string]time.Time{}, map[string]time.Time{}
	issuers := map[*Rotator]map[string]bool{a: {}, b: {}}
	passes := 0
	defer func() { t.Logf("%d passes", passes) }()
	initial := "" // the first CA signs at once: there is no older one to overlap with

	for clock.Before(t0.Add(3 * caLife)) {
		// The replica whose pass comes first makes it; a pass every 7 minutes on top stands
		// for Resync and restarts.
		r := a
		if wake[b].Before(wake[a]) {
			r = b
		}
		clock = minTime(wake[r], clock.Add(7*time.Minute))
		next, err := r.Sync(ctx)
		if err != nil {
			t.Fatalf("%s: pass: %v", clock.Sub(t0), err)
		}
		if !next.After(clock) {
			t.Fatalf("%s: next pass at %s, not later", clock.Sub(t0), next.Sub(t0))
		}
		wake[r] = next
		passes++

		var cfg admissionregistrationv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: "ferry-eviction"}, &cfg); err != nil {
			t.Fatal(err)
		}
		bundled, _ := pki.ParseCerts(cfg.Webhooks[0].ClientConfig.CABundle)
		for _, ca := range bundled {
			if _, ok := firstBundled[ca.Subject.CommonName]; !ok {
				firstBundled[ca.Subject.CommonName] = clock
			}
		}
		for _, rr := range []*Rotator{a, b} {
			if _, err := os.Stat(filepath.Join(rr.o.CertDir, "tls.crt")); err != nil {
				continue // not started yet
			}
			cert := served(t, rr)
			if err := trustedBy(ctx, c, cert, clock); err != nil {
				t.Fatalf("%s: a replica serves a certificate from %s the apiserver refuses: %v", clock.Sub(t0), cert.Issuer.CommonName, err)
			}
			ca := cert.Issuer.CommonName
			if initial == "" {
				initial = ca
			}
			issuers[rr][ca] = true
			if _, ok := firstServed[ca]; !ok {
				firstServed[ca] = clock
			}
		}
	}
	if len(issuers[a]) < 3 || len(issuers[b]) < 3 {
		t.Errorf("replicas served certificates from %d and %d CAs in three CA lifetimes, want 3 or more", len(issuers[a]), len(issuers[b]))
	}
	for ca, served := range firstServed {
		if ahead := served.Sub(firstBundled[ca]); ca != initial && ahead < caLife/6 {
			t.Errorf("CA %s was in the bundles %s before a replica served a certificate from it, want %s or more", ca, ahead, caLife/6)
		}
	}
	if got, want := served(t, a).Issuer.CommonName, served(t, b).Issuer.CommonName; got != want {
		t.Errorf("the replicas end on CAs %s and %s, want one", got, want)
	}
}

// TestReplicasStartTogether starts two replicas at once on an empty cluster: one creates
// the CA, the other gets AlreadyExists and takes it; both serve certificates from it.
func TestReplicasStartTogether(t *testing.T) {
	for i := range 10 {
		ctx := context.Background()
		c := newClient(t, nil)
		clock := t0
		rs := []*Rotator{replica(t, c, &clock, time.Hour, 10*time.Hour), replica(t, c, &clock, time.Hour, 10*time.Hour)}
		var wg sync.WaitGroup
		errs := make([]error, len(rs))
		for j, r := range rs {
			wg.Go(func() { _, errs[j] = r.Sync(ctx) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		var sec corev1.Secret
		if err := c.Get(ctx, client.ObjectKey{Namespace: testNS, Name: DefaultCASecret}, &sec); err != nil {
			t.Fatal(err)
		}
		s, _, err := decodeState(&sec)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if err := served(t, r).CheckSignatureFrom(s.signer.Cert); err != nil {
				t.Fatalf("run %d: a replica serves a certificate that the Secret's CA did not sign: %v", i, err)
			}
			if err := trustedBy(ctx, c, served(t, r), clock); err != nil {
				t.Fatalf("run %d: %v", i, err)
			}
		}
	}
}

// TestConflictRetries: another replica updates the CA Secret first; this pass neither fails
// nor overwrites it, and the next, soon after, reads it again.
func TestConflictRetries(t *testing.T) {
	ctx := context.Background()
	conflicts := 1
	c := newClient(t, &interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
		if _, ok := obj.(*corev1.Secret); ok && conflicts > 0 {
			conflicts--
			return apierrors.NewConflict(corev1.Resource("secrets"), obj.GetName(), errors.New("changed"))
		}
		return c.Update(ctx, obj, opts...)
	}})
	clock := t0
	r := replica(t, c, &clock, time.Hour, 10*time.Hour)
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	clock = t0.Add(400 * time.Minute) // the next CA is due
	next, err := r.Sync(ctx)
	if err != nil {
		t.Fatalf("a conflict failed the pass: %v", err)
	}
	if next.After(clock.Add(retrySoon)) {
		t.Errorf("after a conflict the next pass is in %s, want %s or less", next.Sub(clock), retrySoon)
	}
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: testNS, Name: DefaultCASecret}, &sec); err != nil {
		t.Fatal(err)
	}
	if len(sec.Data[keyNextCert]) == 0 {
		t.Error("the next CA was not added on the pass after the conflict")
	}
}

// TestNewCAKeepsTrust: with the CA Secret gone (deleted, or never made: cert-manager's
// certificate before a switch to self mode), a new CA keeps what the caBundles trusted
// until it ends, so a replica still serving the old certificate is not refused meanwhile.
func TestNewCAKeepsTrust(t *testing.T) {
	ctx := context.Background()
	c := newClient(t, nil)
	clock := t0
	old := mustCA(t, t0.Add(-time.Hour), 2*time.Hour) // ends at t0+1h
	oldCert, _, err := issueServing(old, []string{"ferry-controller-webhook.ferry-system.svc"}, t0.Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ferry-eviction", "ferry-virtualmachine"} {
		var cfg admissionregistrationv1.ValidatingWebhookConfiguration
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &cfg); err != nil {
			t.Fatal(err)
		}
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.CABundle = old.CertPEM
		}
		if err := c.Update(ctx, &cfg); err != nil {
			t.Fatal(err)
		}
	}
	r := replica(t, c, &clock, time.Hour, 10*time.Hour)
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCerts(oldCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := trustedBy(ctx, c, certs[0], clock); err != nil {
		t.Errorf("the old CA's certificate is refused once the new CA is made: %v", err)
	}
	if err := trustedBy(ctx, c, served(t, r), clock); err != nil {
		t.Errorf("the new CA's certificate is refused: %v", err)
	}
	// When the old CA ends, it leaves the bundles.
	clock = t0.Add(time.Hour)
	if _, err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var cfg admissionregistrationv1.ValidatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: "ferry-eviction"}, &cfg); err != nil {
		t.Fatal(err)
	}
	if cas, _ := pki.ParseCerts(cfg.Webhooks[0].ClientConfig.CABundle); len(cas) != 1 {
		t.Errorf("%d CAs in the bundle after the old one ended, want 1", len(cas))
	}
}
