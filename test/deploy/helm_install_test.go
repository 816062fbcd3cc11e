package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ferryvm/ferry/internal/helmchart"
	"github.com/ferryvm/ferry/internal/testenv"
)

// The install tests run helm against a control plane of their own, with nothing of Ferry
// in it (the one of cluster() has the CRDs and the namespaces already): kube-apiserver
// and etcd only, so no pod runs and no namespace finishes terminating; what they check is
// what helm does to the objects.

// TestHelmInstallUpgradeUninstall installs the chart on an empty cluster as the README
// says (helm install -n ferry-system --create-namespace), keeps what the controller writes
// into its objects across upgrades, switches the webhook certificate mode both ways, and
// uninstalls.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	h := newHelmCluster(t)
	ctx := context.Background()

	h.helm(t, "install", "ferry", h.chart, "-n", "ferry-system", "--create-namespace")
	base := kustomize(t, helmchart.Base)
	h.requireObjects(t, base, true)
	ns := h.get(t, "v1", "Namespace", "", "ferry-system")
	if ns == nil || ns.GetLabels()["pod-security.kubernetes.io/enforce"] != "privileged" || ns.GetAnnotations()["meta.helm.sh/release-name"] != "ferry" {
		t.Fatalf("Namespace ferry-system: labels %v, annotations %v; want the chart's, owned by the release", ns.GetLabels(), ns.GetAnnotations())
	}

	// What the controller writes with updates (migrationsigner, webhookcert): the
	// migration CA and the webhooks' caBundle, which the manifests leave out.
	h.controllerWrites(t)

	h.helm(t, "upgrade", "ferry", h.chart, "-n", "ferry-system", "--set", "image.tag=x,config.ipRange=10.70.0.0/16")
	for _, c := range []struct{ kind, name, path string }{
		{"Deployment", "ferry-controller", "spec.template.spec.containers.0.image"},
		{"DaemonSet", "ferry-agent", "spec.template.spec.containers.0.image"},
		{"ConfigMap", "ferry-config", "data.launcherImage"},
	} {
		u := h.get(t, "", c.kind, "ferry-system", c.name)
		if got := field(u, c.path); !strings.HasSuffix(got, ":x") {
			t.Errorf("after helm upgrade --set image.tag=x, %s %s has %s %q", c.kind, c.name, c.path, got)
		}
	}
	if got := field(h.get(t, "v1", "ConfigMap", "ferry-system", "ferry-config"), "data.ipRange"); got != "10.70.0.0/16" {
		t.Errorf("ipRange %q after the upgrade, want 10.70.0.0/16", got)
	}
	h.controllerWritesKept(t)

	// cert-manager's kinds (stand-ins), then the mode and back.
	for _, crd := range certManagerCRDs() {
		if err := h.client.Create(ctx, crd); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "cert-manager's CRDs established", func() (bool, string) {
		for _, crd := range certManagerCRDs() {
			got := &apiextensionsv1.CustomResourceDefinition{}
			if err := h.client.Get(ctx, client.ObjectKeyFromObject(crd), got); err != nil {
				return false, err.Error()
			}
			ok := false
			for _, c := range got.Status.Conditions {
				ok = ok || (c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue)
			}
			if !ok {
				return false, crd.Name + " not established"
			}
		}
		return true, ""
	})
	certManager := kustomize(t, helmchart.CertManagerOverlay)
	h.helm(t, "upgrade", "ferry", h.chart, "-n", "ferry-system", "--reset-then-reuse-values", "--set", "webhookCert.mode=cert-manager")
	h.requireObjects(t, certManager, true)
	h.requireObjects(t, only(base, certManager), false)
	ctl := h.get(t, "apps/v1", "Deployment", "ferry-system", "ferry-controller")
	if got := field(ctl, "spec.template.spec.containers.0.env.0.value"); got != "files" {
		t.Errorf("cert-manager mode: WEBHOOK_CERT_MODE %q, want files", got)
	}
	if got := field(ctl, "spec.template.spec.containers.0.image"); !strings.HasSuffix(got, ":x") {
		t.Errorf("--reset-then-reuse-values lost image.tag=x: the controller runs %q", got)
	}
	h.helm(t, "upgrade", "ferry", h.chart, "-n", "ferry-system", "--reset-then-reuse-values", "--set", "webhookCert.mode=self")
	h.requireObjects(t, base, true)
	h.requireObjects(t, only(certManager, base), false)
	if got := field(h.get(t, "apps/v1", "Deployment", "ferry-system", "ferry-controller"), "spec.template.spec.volumes.0.emptyDir.medium"); got != "Memory" {
		t.Errorf("back in self mode: the webhook-cert volume's emptyDir.medium is %q, want Memory", got)
	}
	h.controllerWritesKept(t)

	h.helm(t, "uninstall", "ferry", "-n", "ferry-system")
	for _, u := range base {
		live := h.get(t, u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName())
		switch {
		case u.GetKind() == "CustomResourceDefinition":
			// Helm never deletes the CRDs of crds/.
			if live == nil {
				t.Errorf("helm uninstall deleted %s", describe(u))
			}
		case u.GetKind() == "Namespace" && u.GetName() == helmchart.ReleaseNamespace:
			// Kept: the release's record is in it until helm has purged it.
			if live == nil || live.GetDeletionTimestamp() != nil {
				t.Errorf("helm uninstall deleted %s, where its release record was", describe(u))
			}
		case u.GetKind() == "Namespace":
			// No namespace controller runs here to finish the deletion.
			if live != nil && live.GetDeletionTimestamp() == nil {
				t.Errorf("%s is not being deleted after helm uninstall", describe(u))
			}
		case u.GetNamespace() == "" && live != nil:
			t.Errorf("%s is left after helm uninstall", describe(u))
		}
	}
}

// TestHelmInstallOverKubectl takes over an install made with `kubectl apply --server-side
// -k deploy/base`, as the README says: a plain helm install refuses the objects it does
// not own (the namespace ferry-system first); --take-ownership --force-conflicts adopts
// them, keeping what the controller wrote, and upgrades take --force-conflicts while
// kubectl co-owns fields.
func TestHelmInstallOverKubectl(t *testing.T) {
	h := newHelmCluster(t)
	ctx := context.Background()
	base := kustomize(t, helmchart.Base)
	for _, u := range base {
		if err := h.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("kubectl")); err != nil {
			t.Fatalf("applying %s: %v", describe(u), err)
		}
	}
	h.controllerWrites(t)

	out, err := h.run("install", "ferry", h.chart, "-n", "ferry-system", "--create-namespace")
	if err == nil || !strings.Contains(out, "cannot be imported into the current release") {
		t.Fatalf("helm install over kubectl's objects: %v, want a refusal to import them:\n%s", err, out)
	}
	t.Logf("helm install without --take-ownership: %s", firstLines(out, 1))
	h.helm(t, "install", "ferry", h.chart, "-n", "ferry-system", "--take-ownership", "--force-conflicts")
	h.requireObjects(t, base, true)
	if ns := h.get(t, "v1", "Namespace", "", "ferry-system"); ns.GetAnnotations()["meta.helm.sh/release-name"] != "ferry" {
		t.Errorf("Namespace ferry-system not adopted: annotations %v", ns.GetAnnotations())
	}
	h.helm(t, "upgrade", "ferry", h.chart, "-n", "ferry-system", "--set", "image.tag=x", "--force-conflicts")
	if got := field(h.get(t, "apps/v1", "Deployment", "ferry-system", "ferry-controller"), "spec.template.spec.containers.0.image"); !strings.HasSuffix(got, ":x") {
		t.Errorf("after the upgrade the controller runs %q", got)
	}
	h.controllerWritesKept(t)
}

// helmCluster is a control plane of a test's own and a helm that talks to it.
type helmCluster struct {
	bin        string
	cfg        *rest.Config
	client     client.Client
	kubeconfig string
	home       string
	chart      string
}

func newHelmCluster(t *testing.T) *helmCluster {
	t.Helper()
	bin := helmBin(t)
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(testenv.RepoRoot(), "bin", "envtest")
	}
	start := time.Now()
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting a control plane (run `make test`, or build bin/ferry and link it as bin/envtest/kube-apiserver and etcd): %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stopping the control plane: %v", err)
		}
	})
	t.Logf("control plane started in %s", time.Since(start).Round(time.Millisecond))
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &helmCluster{bin: bin, cfg: cfg, client: c, home: t.TempDir(), chart: filepath.Join(testenv.RepoRoot(), helmchart.Dir)}
	h.kubeconfig = filepath.Join(h.home, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	if err := clientcmd.WriteToFile(*kc, h.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return h
}

// run runs helm on the cluster, its caches and settings in the test's directory.
func (h *helmCluster) run(args ...string) (string, error) {
	cmd := exec.Command(h.bin, append(args, "--kubeconfig", h.kubeconfig)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+h.home+"/cache", "HELM_CONFIG_HOME="+h.home+"/config", "HELM_DATA_HOME="+h.home+"/data")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// helm runs helm and fails the test if it fails.
func (h *helmCluster) helm(t *testing.T, args ...string) {
	t.Helper()
	start := time.Now()
	out, err := h.run(args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("helm %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
}

// get reads an object; nil when there is none.
func (h *helmCluster) get(t *testing.T, apiVersion, kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	if apiVersion == "" {
		apiVersion = map[string]string{"Deployment": "apps/v1", "DaemonSet": "apps/v1", "ConfigMap": "v1"}[kind]
	}
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	err := h.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, u)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("reading %s %s/%s: %v", kind, ns, name, err)
	}
	return u
}

// requireObjects checks that each object of objs exists (present) or not.
func (h *helmCluster) requireObjects(t *testing.T, objs []*unstructured.Unstructured, present bool) {
	t.Helper()
	for _, u := range objs {
		live := h.get(t, u.GetAPIVersion(), u.GetKind(), u.GetNamespace(), u.GetName())
		switch {
		case present && live == nil:
			t.Errorf("%s is missing", describe(u))
		case !present && live != nil:
			t.Errorf("%s is there, want none", describe(u))
		}
	}
}

const (
	writtenMigrationCA = "Y2VydGlmaWNhdGU=" // what the controller's migration signer keeps
	writtenCABundle    = "Y2EgYnVuZGxl"     // what its webhook certificate rotation publishes
)

// controllerWrites updates the migration CA Secret and the eviction webhook's caBundle
// as the controller does.
func (h *helmCluster) controllerWrites(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	owner := client.FieldOwner("ferry-controller")
	s := h.get(t, "v1", "Secret", "ferry-system", "ferry-migration-ca")
	if err := unstructured.SetNestedStringMap(s.Object, map[string]string{"tls.crt": writtenMigrationCA}, "data"); err != nil {
		t.Fatal(err)
	}
	if err := h.client.Update(ctx, s, owner); err != nil {
		t.Fatal(err)
	}
	w := h.get(t, "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "", "ferry-eviction")
	hooks, _, _ := unstructured.NestedSlice(w.Object, "webhooks")
	if err := unstructured.SetNestedField(hooks[0].(map[string]any), writtenCABundle, "clientConfig", "caBundle"); err != nil {
		t.Fatal(err)
	}
	if err := unstructured.SetNestedSlice(w.Object, hooks, "webhooks"); err != nil {
		t.Fatal(err)
	}
	if err := h.client.Update(ctx, w, owner); err != nil {
		t.Fatal(err)
	}
}

func (h *helmCluster) controllerWritesKept(t *testing.T) {
	t.Helper()
	if got := field(h.get(t, "v1", "Secret", "ferry-system", "ferry-migration-ca"), "data.tls\\.crt"); got != writtenMigrationCA {
		t.Errorf("the migration CA the controller wrote is %q after helm, want it kept", got)
	}
	if got := field(h.get(t, "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "", "ferry-eviction"), "webhooks.0.clientConfig.caBundle"); got != writtenCABundle {
		t.Errorf("the caBundle the controller wrote is %q after helm, want it kept", got)
	}
}

// field reads a string at a dotted path (numbers index lists, "\." is a dot of a key).
func field(u *unstructured.Unstructured, path string) string {
	if u == nil {
		return ""
	}
	var cur any = u.Object
	for _, p := range strings.Split(strings.ReplaceAll(path, `\.`, "\x00"), ".") {
		p = strings.ReplaceAll(p, "\x00", ".")
		switch c := cur.(type) {
		case map[string]any:
			cur = c[p]
		case []any:
			i := 0
			for _, d := range p {
				i = i*10 + int(d-'0')
			}
			if i >= len(c) {
				return ""
			}
			cur = c[i]
		default:
			return ""
		}
	}
	s, _ := cur.(string)
	return s
}

// only is the objects of a that b has not.
func only(a, b []*unstructured.Unstructured) []*unstructured.Unstructured {
	in := map[string]bool{}
	for _, u := range b {
		in[u.GetAPIVersion()+" "+describe(u)] = true
	}
	var out []*unstructured.Unstructured
	for _, u := range a {
		if !in[u.GetAPIVersion()+" "+describe(u)] {
			out = append(out, u)
		}
	}
	return out
}
