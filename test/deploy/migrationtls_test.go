package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ferryvm/ferry/internal/agent/migrationcert"
	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/controller/migration"
	"github.com/ferryvm/ferry/internal/controller/migrationsigner"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/migrationtls"
)

// TestAgentGetsItsNodesMigrationCertificate runs the controller's migration signer on its
// ServiceAccount token and the agent's certificate keeper on a token bound to its Pod on
// node tls-a, as the manifests deploy them: the keeper gets node tls-a's certificate signed by the CA the
// controller makes in the Secret the base ships empty, and keeps it with its key on the
// node; the same agent's request for node tls-b's certificate, and one on a token bound to
// no Pod, are denied with the reason; neither is refused anything by RBAC.
func TestAgentGetsItsNodesMigrationCertificate(t *testing.T) {
	install(t)
	ctx := context.Background()
	const a, b = "tls-a", "tls-b"
	caSecret := manifest(t, "Secret", migrationsigner.DefaultSecretName)
	if err := admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(caSecret), fieldOwner, client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	agentPod := placeholderPod(t, namespace, "ferry-agent-"+a, a, "ferry-agent")
	refused := &refusals{}
	agentCfg := refused.wrap("agent", configFor(tokenFor(t, "ferry-agent", agentPod)))
	ctrlCfg := refused.wrap("controller", configFor(tokenFor(t, "ferry-controller", nil)))
	agentCS, err := kubernetes.NewForConfig(agentCfg)
	if err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	// The signer as controller.Run sets it up, alone: a second controller.Run in this
	// process would clash with TestControllerAndAgentRunOnTheirOwnTokens' over controller
	// names (controller-runtime keeps them unique per process). That test runs the signer
	// on the same token among all the others.
	mgr, err := ctrl.NewManager(ctrlCfg, ctrl.Options{
		Scheme:                 controller.NewScheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	signer := &migrationsigner.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorderFor("migration-signer"),
		Namespace: migration.ConfigNamespace, Policy: migrationsigner.Policy{AgentUser: migrationsigner.AgentUser(migration.ConfigNamespace)}}
	if err := signer.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctrlDone := make(chan error, 1)
	go func() { ctrlDone <- mgr.Start(runCtx) }()
	dir := filepath.Join(t.TempDir(), migrationtls.DirName)
	keeperDone := make(chan struct{})
	go func() {
		migrationcert.Run(runCtx, migrationcert.Options{Client: agentCS, Node: a, Dir: dir, Log: testr.New(t)})
		close(keeperDone)
	}()

	var creds *migrationtls.Credentials
	eventually(t, 60*time.Second, "node "+a+"'s migration certificate in "+dir, func() (bool, string) {
		creds, err = migrationtls.Load(dir)
		return err == nil, fmt.Sprint(err)
	})
	if err := creds.Check(a, time.Now()); err != nil {
		t.Fatal(err)
	}
	var secret corev1.Secret
	if err := admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: migrationsigner.DefaultSecretName}, &secret); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(secret.Data[corev1.TLSCertKey])) != strings.TrimSpace(string(creds.CAPEM)) {
		t.Errorf("the node trusts another CA than the one in Secret %s", migrationsigner.DefaultSecretName)
	}
	for name, want := range map[string]os.FileMode{".": 0o700, hypervisor.TLSServerKeyFile: 0o600, hypervisor.TLSClientKeyFile: 0o600} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %v", name, st, err, want)
		}
	}
	csrs, err := adminCS.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, csr := range csrs.Items {
		if strings.HasPrefix(csr.Name, "ferry-migration-"+a+"-") {
			t.Logf("CSR %s by %s (extra %v): %v; certificate for %s, valid until %s", csr.Name, csr.Spec.Username,
				csr.Spec.Extra[migrationsigner.NodeNameExtra], conditionsOf(&csr), creds.Cert.Subject, creds.Cert.NotAfter.UTC())
		}
	}

	// The same agent asks for another node's certificate; then someone with the agent's
	// ServiceAccount but a token bound to no Pod asks for its own node's.
	unbound, err := kubernetes.NewForConfig(refused.wrap("unbound agent", configFor(tokenFor(t, "ferry-agent", nil))))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		who  string
		cs   kubernetes.Interface
		node string
		says string
	}{
		{"the agent on node " + a, agentCS, b, "with a token of node " + a + ": node " + b + "'s migration certificate is signed only for the agent on " + b},
		{"the agent's ServiceAccount on a token bound to no Pod", unbound, a, "with a token that names no node"},
	} {
		_, csrPEM, err := migrationtls.NewRequest(tc.node)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := tc.cs.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "ferry-migration-" + tc.node + "-"},
			Spec:       certificatesv1.CertificateSigningRequestSpec{Request: csrPEM, SignerName: migrationtls.SignerName, Usages: migrationtls.Usages[certificatesv1.KeyUsage]()},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, tc.who+": request for node "+tc.node+" denied", func() (bool, string) {
			got, err := adminCS.CertificatesV1().CertificateSigningRequests().Get(ctx, csr.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if len(got.Status.Certificate) > 0 {
				t.Fatalf("%s got node %s's certificate", tc.who, tc.node)
			}
			for _, c := range got.Status.Conditions {
				if c.Type == certificatesv1.CertificateDenied {
					if c.Reason != migrationsigner.ReasonRequester || !strings.Contains(c.Message, tc.says) {
						t.Errorf("%s: denied %s: %s; want %s saying %q", tc.who, c.Reason, c.Message, migrationsigner.ReasonRequester, tc.says)
					}
					t.Logf("%s asking for node %s's certificate: denied %s: %s", tc.who, tc.node, c.Reason, c.Message)
					return true, ""
				}
			}
			return false, conditionsOf(got)
		})
	}

	stop()
	select {
	case err := <-ctrlDone:
		if err != nil {
			t.Errorf("the controller ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("the controller did not stop within 30s")
	}
	<-keeperDone
	if r := refused.list(); len(r) > 0 {
		t.Errorf("refused %d request(s):\n  %s", len(r), strings.Join(r, "\n  "))
	}
}

func conditionsOf(csr *certificatesv1.CertificateSigningRequest) string {
	var s []string
	for _, c := range csr.Status.Conditions {
		s = append(s, string(c.Type)+" "+c.Reason)
	}
	return fmt.Sprint(s)
}
