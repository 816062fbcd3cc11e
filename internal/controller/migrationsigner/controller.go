package migrationsigner

import (
	"context"
	"fmt"
	"sync"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/ferryvm/ferry/internal/migrationtls"
)

// DefaultSecretName is the Secret (in Ferry's namespace) that keeps the migration CA.
const DefaultSecretName = "ferry-migration-ca"

// Reconciler approves, denies and signs the requests of migrationtls.SignerName.
type Reconciler struct {
	Client client.Client
	// APIReader reads the CA Secret: the manager caches no Secrets (that would take
	// every Secret of the cluster, and the permission to read them).
	APIReader client.Reader
	Recorder  record.EventRecorder
	// Namespace and SecretName locate the CA Secret (default DefaultSecretName).
	Namespace, SecretName string
	Policy                Policy
	Now                   func() time.Time

	mu sync.Mutex
	ca *migrationtls.CA // loaded or made on first need
}

// SetupWithManager registers the signer; it sees only its own signer's requests.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.SecretName == "" {
		r.SecretName = DefaultSecretName
	}
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		csr, ok := o.(*certificatesv1.CertificateSigningRequest)
		return ok && csr.Spec.SignerName == migrationtls.SignerName
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("migration-signer").
		For(&certificatesv1.CertificateSigningRequest{}, builder.WithPredicates(ours)).
		Complete(r)
}

// Reconcile decides on one request, then signs it if it is approved.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	csr := &certificatesv1.CertificateSigningRequest{}
	if err := r.Client.Get(ctx, req.NamespacedName, csr); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if csr.Spec.SignerName != migrationtls.SignerName || len(csr.Status.Certificate) > 0 ||
		hasCondition(csr, certificatesv1.CertificateDenied) || hasCondition(csr, certificatesv1.CertificateFailed) {
		return ctrl.Result{}, nil
	}
	v := r.Policy.decide(csr)
	if !hasCondition(csr, certificatesv1.CertificateApproved) {
		if !v.approve {
			r.setCondition(csr, certificatesv1.CertificateDenied, v.reason, v.message)
			if err := r.Client.SubResource("approval").Update(ctx, csr); err != nil {
				return ctrl.Result{}, err
			}
			r.Recorder.Eventf(csr, corev1.EventTypeWarning, "MigrationCertificateDenied", "%s: %s", v.reason, v.message)
			log.Info("Denied migration certificate request", "csr", csr.Name, "reason", v.reason, "message", v.message)
			return ctrl.Result{}, nil
		}
		r.setCondition(csr, certificatesv1.CertificateApproved, v.reason, v.message)
		if err := r.Client.SubResource("approval").Update(ctx, csr); err != nil {
			return ctrl.Result{}, err
		}
		log.Info("Approved migration certificate request", "csr", csr.Name, "node", v.node)
	}
	if !v.approve {
		// Approved by someone else, against the rules: the signer still refuses.
		r.setCondition(csr, certificatesv1.CertificateFailed, v.reason, "approved, but the migration signer refuses it: "+v.message)
		if err := r.Client.Status().Update(ctx, csr); err != nil {
			return ctrl.Result{}, err
		}
		log.Info("Refused to sign an approved migration certificate request", "csr", csr.Name, "reason", v.reason)
		return ctrl.Result{}, nil
	}
	ca, err := r.loadCA(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	certPEM, err := ca.Sign(v.request, v.node, r.Now(), duration(csr))
	if err != nil {
		return ctrl.Result{}, err
	}
	csr.Status.Certificate = certPEM
	if err := r.Client.Status().Update(ctx, csr); err != nil {
		return ctrl.Result{}, err
	}
	log.Info("Signed migration certificate", "csr", csr.Name, "node", v.node, "validFor", duration(csr).String())
	return ctrl.Result{}, nil
}

func hasCondition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func (r *Reconciler) setCondition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType, reason, msg string) {
	now := metav1.NewTime(r.Now())
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: msg, LastUpdateTime: now, LastTransitionTime: now,
	})
}

// loadCA returns the CA, reading its Secret or making it on first need. deploy/base ships
// the Secret empty (the controller may then fill it, but create no Secret); without it
// (ferry up) it is created. Two controllers may make a CA at once: the one whose write
// loses reads the winner's.
func (r *Reconciler) loadCA(ctx context.Context) (*migrationtls.CA, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ca != nil {
		return r.ca, nil
	}
	key := client.ObjectKey{Namespace: r.Namespace, Name: r.SecretName}
	s := &corev1.Secret{}
	err := r.APIReader.Get(ctx, key, s)
	empty := err == nil && len(s.Data[corev1.TLSCertKey]) == 0 && len(s.Data[corev1.TLSPrivateKeyKey]) == 0
	if apierrors.IsNotFound(err) || empty {
		certPEM, keyPEM, err2 := migrationtls.NewCA(r.Now())
		if err2 != nil {
			return nil, err2
		}
		data := map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM}
		if empty {
			s.Data = data
			err = r.Client.Update(ctx, s)
		} else {
			s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.SecretName,
				Labels: map[string]string{"app.kubernetes.io/part-of": "ferry"}}, Type: corev1.SecretTypeOpaque, Data: data}
			err = r.Client.Create(ctx, s)
		}
		switch {
		case apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err):
			s = &corev1.Secret{}
			err = r.APIReader.Get(ctx, key, s)
		case err == nil:
			ctrl.LoggerFrom(ctx).Info("Made the migration CA", "secret", key.String())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the migration CA (Secret %s): %w", key, err)
	}
	c, err := migrationtls.ParseCA(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("the Secret %s holds no usable migration CA (%v); empty it to have a new one made (nodes then renew their certificates)", key, err)
	}
	r.ca = c
	return c, nil
}
