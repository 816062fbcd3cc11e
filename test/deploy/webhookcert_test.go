package deploy

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Lifetimes short enough to see a serving certificate renewed every 6.7 s and the CA
// replaced within half a minute: the next CA joins the caBundles 20 s after the first was
// made, signs from 25 s, and the first one ends at 30 s.
const (
	rotCertValidity = 10 * time.Second
	rotCAValidity   = 30 * time.Second
	webhookCASecret = "ferry-webhook-ca"
)

// TestWebhookCertRotatesOnOwnToken runs two replicas of `ferry controller
// --webhook-cert-mode=self` (processes of bin/ferry, as the Deployment runs them) on the
// controller's ServiceAccount token, with deploy/base's two webhook configurations. The
// apiserver calls them through a proxy that hands each connection to the next replica, as
// the Service would. It checks that the first replica creates the CA and sets the
// caBundles, the second takes the same CA, and then, while both serving certificates and
// the CA are replaced and the old CA leaves the caBundles, that every admission request
// succeeds and every certificate either replica shows is trusted by the caBundle of the
// moment; at the end both serve certificates of the new CA. Nothing the replicas asked for was refused (their logs), and
// the controller's token cannot create another Secret (the policy of webhook-cert-rbac.yaml).
func TestWebhookCertRotatesOnOwnToken(t *testing.T) {
	install(t)
	bin := ferryBin(t)
	ctx := context.Background()
	// A CA from an earlier run would not be this test's.
	if err := admin.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: webhookCASecret}}); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}

	// deploy/base's webhook configurations, called by URL through the proxy: nothing routes
	// Services to processes here.
	proxy := startWebhookProxy(t, "127.0.0.1:0")
	configs := []webhookConfigName{{kindValidating, "ferry-eviction"}, {kindValidating, "ferry-virtualmachine"}, {kindMutating, "ferry-virtualmachine"}}
	for _, name := range configs {
		cfg := name.object()
		fromManifest(t, manifest(t, name.kind, name.name), cfg)
		for _, cc := range clientConfigsOf(cfg) {
			if len(cc.CABundle) > 0 {
				t.Fatalf("deploy/base sets caBundle of %s: the controller does", name)
			}
			url := fmt.Sprintf("https://127.0.0.1:%d%s", proxy.port(), *cc.Service.Path)
			cc.Service, cc.URL = nil, &url
		}
		if err := admin.Create(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		// All fail closed: left behind, they would refuse other tests' VMs and evictions.
		t.Cleanup(func() { _ = admin.Delete(context.Background(), cfg) })
	}

	kubeconfig := writeTokenKubeconfig(t, tokenFor(t, "ferry-controller", nil))
	a := startCtrlReplica(t, bin, kubeconfig, "a")
	proxy.add(a.webhookPort)
	var firstCA *x509.Certificate
	eventually(t, 60*time.Second, "replica a creates the CA and sets every caBundle to it", func() (bool, string) {
		ca, err := secretCA(ctx)
		if err != nil {
			return false, err.Error()
		}
		firstCA = ca
		for _, name := range configs {
			cas, err := caBundle(ctx, name)
			if err != nil || len(cas) != 1 || !cas[0].Equal(ca) {
				return false, fmt.Sprintf("%s: %d CAs in caBundle, %v", name, len(cas), err)
			}
		}
		return true, ""
	})
	a.waitReady(t)
	ns := newNamespace(t, "webhookcert-")
	eventually(t, 30*time.Second, "the VirtualMachine webhook answers the apiserver over TLS", func() (bool, string) {
		err := admitProbe(ctx, ns)
		return err == nil, fmt.Sprint(err)
	})

	b := startCtrlReplica(t, bin, kubeconfig, "b")
	b.waitReady(t)
	proxy.add(b.webhookPort)
	for _, r := range []*ctrlReplica{a, b} {
		cert, err := r.served(ctx)
		if err != nil {
			t.Fatalf("replica %s: %v", r.name, err)
		}
		if err := cert.CheckSignatureFrom(firstCA); err != nil {
			t.Fatalf("replica %s serves a certificate of another CA than the Secret's: %v", r.name, err)
		}
		if err := cert.VerifyHostname("ferry-controller-webhook.ferry-system.svc"); err != nil {
			t.Errorf("replica %s: %v", r.name, err)
		}
	}

	// From here every admission request and every look at a replica's certificate must
	// succeed, through the serving certificates' and the CA's rotations.
	w := watchRotation(ctx, ns, []*ctrlReplica{a, b})
	eventually(t, 90*time.Second, "both replicas renew their certificate and move to the next CA", func() (bool, string) {
		if w.failure() != nil {
			return true, "" // reported below
		}
		seen := w.summary()
		for _, r := range []*ctrlReplica{a, b} {
			first, later := 0, 0
			for _, c := range seen[r.name] {
				if c.CheckSignatureFrom(firstCA) == nil {
					first++
				} else {
					later++
				}
			}
			if first < 2 || later < 1 {
				return false, fmt.Sprintf("replica %s: %d certificates of the first CA, %d of a later one", r.name, first, later)
			}
		}
		return true, ""
	})
	eventually(t, 30*time.Second, "the first CA leaves the caBundles when it ends", func() (bool, string) {
		if w.failure() != nil {
			return true, "" // reported below
		}
		for _, name := range configs {
			cas, err := caBundle(ctx, name)
			if err != nil || len(cas) != 1 || cas[0].Equal(firstCA) {
				return false, fmt.Sprintf("%s: %d CAs, %v", name, len(cas), err)
			}
		}
		return true, ""
	})
	w.stop()
	if err := w.failure(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d admission requests and %d looks at the replicas' certificates succeeded; certificates seen: a %d, b %d; most CAs in a caBundle at once: %d",
		w.admitted, w.looks, len(w.summary()["a"]), len(w.summary()["b"]), w.mostCAs)
	if w.mostCAs < 2 {
		t.Errorf("the caBundle never held two CAs: no overlap while the CA changed")
	}

	// Both end on the Secret's CA, a new one.
	ca, err := secretCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Equal(firstCA) {
		t.Fatal("the CA in the Secret is still the first one")
	}
	eventually(t, 30*time.Second, "both replicas serve a certificate of the Secret's CA", func() (bool, string) {
		for _, r := range []*ctrlReplica{a, b} {
			cert, err := r.served(ctx)
			if err != nil {
				return false, err.Error()
			}
			if cert.CheckSignatureFrom(ca) != nil {
				return false, fmt.Sprintf("replica %s serves a certificate of %s", r.name, cert.Issuer.CommonName)
			}
		}
		return true, ""
	})

	// Applying the manifests again (server-side, as the install does) keeps the caBundle.
	for _, name := range configs {
		cfg := name.object()
		if err := admin.Get(ctx, client.ObjectKey{Name: name.name}, cfg); err != nil {
			t.Fatal(err)
		}
		want := name.object()
		fromManifest(t, manifest(t, name.kind, name.name), want)
		have := clientConfigsOf(cfg)
		for i, cc := range clientConfigsOf(want) {
			*cc = admissionregistrationv1.WebhookClientConfig{URL: have[i].URL}
		}
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(want)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: obj}
		u.SetAPIVersion("admissionregistration.k8s.io/v1")
		u.SetKind(name.kind)
		unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
		if err := admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), fieldOwner, client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
		cas, err := caBundle(ctx, name)
		if err != nil || len(cas) == 0 {
			t.Errorf("applying %s again emptied its caBundle (%v)", name, err)
		}
	}

	// RBAC lets the controller create Secrets in ferry-system; the policy only its CA.
	cs, err := clientFor(tokenFor(t, "ferry-controller", nil))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the policy refuses the controller another Secret", func() (bool, string) {
		err := cs.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "not-the-ca"}}, client.DryRunAll)
		return refusedWith(err, "may create only the Opaque Secret ferry-system/ferry-webhook-ca"), fmt.Sprint(err)
	})

	for _, r := range []*ctrlReplica{a, b} {
		r.stop(t)
		out, err := os.ReadFile(r.log)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(strings.ToLower(string(out)), "forbidden") {
			t.Errorf("replica %s was refused a request:\n%s", r.name, grepLines(out, "forbidden"))
		}
	}
}

// admitProbe asks the apiserver to create a VM without keeping it: the VirtualMachine
// webhooks (the mutating one, which names its class, then the validating one; both
// failurePolicy Fail) must answer for it to pass.
func admitProbe(ctx context.Context, ns string) error {
	vm := &v1alpha2.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "probe"},
		Spec: v1alpha2.VirtualMachineSpec{
			CPU:             v1alpha2.CPUSpec{Cores: 1, CoreFraction: "10%"},
			Memory:          v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
			BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.ClusterImageDevice, Name: "probe-image"}},
		},
	}
	return admin.Create(ctx, vm, client.DryRunAll)
}

// secretCA is the CA that signs now, from the Secret.
func secretCA(ctx context.Context) (*x509.Certificate, error) {
	var sec corev1.Secret
	if err := admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: webhookCASecret}, &sec); err != nil {
		return nil, err
	}
	certs, err := pemCerts(sec.Data["ca.crt"])
	if err != nil || len(certs) != 1 {
		return nil, fmt.Errorf("ca.crt of the Secret: %d certificates, %v", len(certs), err)
	}
	return certs[0], nil
}

// The kinds of webhook configurations.
const (
	kindValidating = "ValidatingWebhookConfiguration"
	kindMutating   = "MutatingWebhookConfiguration"
)

// webhookConfigName names a webhook configuration: deploy/base has a validating and a
// mutating ferry-virtualmachine.
type webhookConfigName struct{ kind, name string }

func (n webhookConfigName) String() string { return n.kind + " " + n.name }

// object is an empty configuration of n's kind.
func (n webhookConfigName) object() client.Object {
	if n.kind == kindMutating {
		return &admissionregistrationv1.MutatingWebhookConfiguration{}
	}
	return &admissionregistrationv1.ValidatingWebhookConfiguration{}
}

// caBundle is the caBundle of a configuration's webhooks, which must all hold the same.
func caBundle(ctx context.Context, name webhookConfigName) ([]*x509.Certificate, error) {
	cfg := name.object()
	if err := admin.Get(ctx, client.ObjectKey{Name: name.name}, cfg); err != nil {
		return nil, err
	}
	hooks := clientConfigsOf(cfg)
	for _, h := range hooks[1:] {
		if !bytes.Equal(h.CABundle, hooks[0].CABundle) {
			return nil, fmt.Errorf("%s: its webhooks hold different caBundles", name)
		}
	}
	return pemCerts(hooks[0].CABundle)
}

func pemCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out, nil
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// rotationWatch makes admission requests and looks at each replica's certificate, four
// times a second, and records any failure.
type rotationWatch struct {
	mu       sync.Mutex
	failed   error
	admitted int
	looks    int
	mostCAs  int
	certs    map[string][]*x509.Certificate // by replica, each certificate once
	done     chan struct{}
	finished sync.WaitGroup
}

func watchRotation(ctx context.Context, ns string, replicas []*ctrlReplica) *rotationWatch {
	w := &rotationWatch{certs: map[string][]*x509.Certificate{}, done: make(chan struct{})}
	w.finished.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
			err := admitProbe(ctx, ns)
			w.mu.Lock()
			if err != nil && w.failed == nil {
				w.failed = fmt.Errorf("%s: an admission request failed: %w", time.Now().Format(time.StampMilli), err)
			}
			w.admitted++
			w.mu.Unlock()
			if cas, err := caBundle(ctx, webhookConfigName{kindValidating, "ferry-virtualmachine"}); err == nil {
				w.mu.Lock()
				w.mostCAs = max(w.mostCAs, len(cas))
				w.mu.Unlock()
			}
			for _, r := range replicas {
				cert, err := r.served(ctx)
				w.mu.Lock()
				switch {
				case err != nil && w.failed == nil:
					w.failed = fmt.Errorf("%s: replica %s: %w", time.Now().Format(time.StampMilli), r.name, err)
				case err == nil:
					w.looks++
					if !containsCert(w.certs[r.name], cert) {
						w.certs[r.name] = append(w.certs[r.name], cert)
					}
				}
				w.mu.Unlock()
			}
		}
	})
	return w
}

func (w *rotationWatch) stop() {
	close(w.done)
	w.finished.Wait()
}

func (w *rotationWatch) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

func (w *rotationWatch) summary() map[string][]*x509.Certificate {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string][]*x509.Certificate{}
	for k, v := range w.certs {
		out[k] = append([]*x509.Certificate(nil), v...)
	}
	return out
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}
