package migrationsigner

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/ferryvm/ferry/internal/migrationtls"
)

func newReconciler(t *testing.T, funcs interceptor.Funcs, objs ...client.Object) (*Reconciler, client.Client) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&certificatesv1.CertificateSigningRequest{}).WithInterceptorFuncs(funcs).Build()
	return &Reconciler{Client: c, APIReader: c, Recorder: record.NewFakeRecorder(10), Namespace: "ferry-system",
		SecretName: DefaultSecretName, Policy: Policy{AgentUser: agent}, Now: time.Now}, c
}

func reconcileCSR(t *testing.T, r *Reconciler, c client.Client, csr *certificatesv1.CertificateSigningRequest) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(csr)}); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	got := &certificatesv1.CertificateSigningRequest{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(csr), got); err != nil {
		t.Fatal(err)
	}
	return got
}

func condition(csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequestCondition {
	for i := range csr.Status.Conditions {
		if csr.Status.Conditions[i].Type == typ {
			return &csr.Status.Conditions[i]
		}
	}
	return nil
}

// An approved request gets a certificate for its node, signed by the CA the signer made
// in the Secret and put after the certificate; a second request is signed by the same CA.
func TestReconcileApprovesAndSigns(t *testing.T) {
	r, c := newReconciler(t, interceptor.Funcs{})
	csr := csrFor(t, "node-1", nil, nil)
	csr.Name = "ferry-migration-node-1-abc"
	if err := c.Create(context.Background(), csr); err != nil {
		t.Fatal(err)
	}
	got := reconcileCSR(t, r, c, csr)
	if cond := condition(got, certificatesv1.CertificateApproved); cond == nil || cond.Reason != ReasonApproved {
		t.Fatalf("conditions %+v, want Approved", got.Status.Conditions)
	}
	block, rest := pem.Decode(got.Status.Certificate)
	if block == nil {
		t.Fatalf("no certificate: %q", got.Status.Certificate)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "ferry-system", Name: DefaultSecretName}, &s); err != nil {
		t.Fatalf("the CA Secret: %v", err)
	}
	if strings.TrimSpace(string(rest)) != strings.TrimSpace(string(s.Data[corev1.TLSCertKey])) {
		t.Errorf("status.certificate does not end with the CA of the Secret")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(s.Data[corev1.TLSCertKey])
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "node-1", KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Errorf("certificate does not verify for usage %v: %v", u, err)
		}
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	if cert.Subject.CommonName != "system:ferry-node:node-1" || life < migrationtls.DefaultDuration || life > migrationtls.DefaultDuration+10*time.Minute ||
		cert.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment || cert.IsCA {
		t.Errorf("certificate %s, valid %v, key usage %v, CA %v", cert.Subject, life, cert.KeyUsage, cert.IsCA)
	}

	second := csrFor(t, "node-2", nil, nil)
	second.Name = "ferry-migration-node-2-abc"
	if err := c.Create(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	got2 := reconcileCSR(t, r, c, second)
	_, rest2 := pem.Decode(got2.Status.Certificate)
	if string(rest2) != string(rest) {
		t.Errorf("the second certificate comes with another CA")
	}
	// Signed requests are left alone.
	before := got.ResourceVersion
	if again := reconcileCSR(t, r, c, got); again.ResourceVersion != before {
		t.Errorf("a signed request was written again")
	}
}

// A request against the rules is denied with the reason, and not signed.
func TestReconcileDenies(t *testing.T) {
	r, c := newReconciler(t, interceptor.Funcs{})
	csr := csrFor(t, "node-2", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
		s.Extra = map[string]certificatesv1.ExtraValue{NodeNameExtra: {"node-1"}}
	}, nil)
	csr.Name = "ferry-migration-node-2-evil"
	if err := c.Create(context.Background(), csr); err != nil {
		t.Fatal(err)
	}
	got := reconcileCSR(t, r, c, csr)
	cond := condition(got, certificatesv1.CertificateDenied)
	if cond == nil || cond.Reason != ReasonRequester || len(got.Status.Certificate) > 0 || condition(got, certificatesv1.CertificateApproved) != nil {
		t.Fatalf("status %+v, want Denied %s and no certificate", got.Status, ReasonRequester)
	}
	t.Logf("denied: %s", cond.Message)
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "ferry-system", Name: DefaultSecretName}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a denial made the CA: %v", err)
	}
}

// A request someone else approved is still held to the rules: Failed, not signed.
func TestReconcileRefusesForeignApproval(t *testing.T) {
	r, c := newReconciler(t, interceptor.Funcs{})
	csr := csrFor(t, "node-1", func(_ *x509.CertificateRequest, s *certificatesv1.CertificateSigningRequestSpec) {
		s.Usages = append(s.Usages, certificatesv1.UsageCertSign)
	}, nil)
	csr.Name = "approved-by-hand"
	csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "KubectlApprove"}}
	if err := c.Create(context.Background(), csr); err != nil {
		t.Fatal(err)
	}
	got := reconcileCSR(t, r, c, csr)
	if cond := condition(got, certificatesv1.CertificateFailed); cond == nil || cond.Reason != ReasonUsages || len(got.Status.Certificate) > 0 {
		t.Fatalf("status %+v, want Failed %s", got.Status, ReasonUsages)
	}
}

// Two controllers making the CA at once: the one whose Create loses uses the winner's. A
// Secret shipped empty (deploy/base) is filled in.
func TestLoadCA(t *testing.T) {
	winnerCert, winnerKey, err := migrationtls.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	winner := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ferry-system", Name: DefaultSecretName},
		Data: map[string][]byte{corev1.TLSCertKey: winnerCert, corev1.TLSPrivateKeyKey: winnerKey}}
	r, _ := newReconciler(t, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				// The other replica was first.
				if err := c.Create(ctx, winner.DeepCopy()); err != nil {
					return err
				}
				return apierrors.NewAlreadyExists(schema.GroupResource{Resource: "secrets"}, obj.GetName())
			}
			return c.Create(ctx, obj, opts...)
		},
	})
	ca, err := r.loadCA(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if string(ca.CertPEM()) != string(winnerCert) {
		t.Errorf("the losing replica uses a CA of its own")
	}

	empty := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ferry-system", Name: DefaultSecretName}, Type: corev1.SecretTypeOpaque}
	r, c := newReconciler(t, interceptor.Funcs{}, empty)
	ca, err = r.loadCA(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(empty), &s); err != nil {
		t.Fatal(err)
	}
	if string(s.Data[corev1.TLSCertKey]) != string(ca.CertPEM()) || len(s.Data[corev1.TLSPrivateKeyKey]) == 0 {
		t.Errorf("the empty Secret was not filled with the CA in use")
	}

	broken := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ferry-system", Name: DefaultSecretName},
		Data: map[string][]byte{corev1.TLSCertKey: []byte("junk"), corev1.TLSPrivateKeyKey: []byte("junk")}}
	r, _ = newReconciler(t, interceptor.Funcs{}, broken)
	if _, err := r.loadCA(context.Background()); err == nil || !strings.Contains(err.Error(), "holds no usable migration CA") {
		t.Errorf("a broken Secret: %v", err)
	}
}
