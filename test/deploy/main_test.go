// Package deploy tests the manifests in deploy/base against a real kube-apiserver (envtest,
// run from bin/ferry as in the controller tests): that every object applies, that the
// agent's token may change only its own node's objects, that the ServiceAccounts are
// allowed exactly what the code uses, and that the controller and the agent run on those
// permissions. scripts/test.sh builds bin/ferry and sets KUBEBUILDER_ASSETS.
package deploy

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/testenv"
)

const (
	namespace  = "ferry-system"
	fieldOwner = client.FieldOwner("ferry-deploy-test")
	agentUser  = "system:serviceaccount:ferry-system:ferry-agent"
	ctrlUser   = "system:serviceaccount:ferry-system:ferry-controller"
	nodeExtra  = "authentication.kubernetes.io/node-name"
)

// The control plane is started by the first test that needs it; the CRD copy check does not.
var (
	startOnce sync.Once
	env       *envtest.Environment
	cfg       *rest.Config
	admin     client.Client
	adminCS   *kubernetes.Clientset
	startErr  error
)

func TestMain(m *testing.M) {
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	code := m.Run()
	if env != nil {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the control plane:", err)
		}
	}
	os.Exit(code)
}

// cluster starts kube-apiserver and etcd with Ferry's CRDs (testenv), stand-ins for
// cert-manager's CRDs and the namespace ferry-system.
func cluster(t *testing.T) {
	t.Helper()
	startOnce.Do(func() {
		env, cfg, startErr = testenv.Start()
		if startErr != nil {
			return
		}
		cfg.QPS, cfg.Burst = 200, 400
		scheme := controller.NewScheme()
		_ = apiextensionsv1.AddToScheme(scheme)
		if admin, startErr = client.New(cfg, client.Options{Scheme: scheme}); startErr != nil {
			return
		}
		if adminCS, startErr = kubernetes.NewForConfig(cfg); startErr != nil {
			return
		}
		ctx := context.Background()
		for _, crd := range certManagerCRDs() {
			if startErr = admin.Create(ctx, crd); startErr != nil {
				return
			}
		}
		for _, ns := range []string{namespace, corev1.NamespaceNodeLease, v1alpha2.FencingLeaseNamespace} {
			err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				startErr = err
				return
			}
		}
		startErr = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			for _, crd := range certManagerCRDs() {
				got := &apiextensionsv1.CustomResourceDefinition{}
				if err := admin.Get(ctx, client.ObjectKeyFromObject(crd), got); err != nil {
					return false, nil
				}
				established := false
				for _, c := range got.Status.Conditions {
					established = established || (c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue)
				}
				if !established {
					return false, nil
				}
			}
			return true, nil
		})
	})
	if startErr != nil {
		t.Fatalf("starting the control plane: %v", startErr)
	}
}

// certManagerCRDs stand in for cert-manager's Issuer and Certificate, which
// deploy/overlays/cert-manager uses for the webhooks' certificate: the kinds exist, their
// schema is cert-manager's business.
func certManagerCRDs() []*apiextensionsv1.CustomResourceDefinition {
	var out []*apiextensionsv1.CustomResourceDefinition
	for _, kind := range []string{"Issuer", "Certificate"} {
		plural := strings.ToLower(kind) + "s"
		out = append(out, &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: plural + ".cert-manager.io"},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: "cert-manager.io",
				Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: kind, ListKind: kind + "List", Plural: plural, Singular: strings.ToLower(kind)},
				Scope: apiextensionsv1.NamespaceScoped,
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
					Name: "v1", Served: true, Storage: true,
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type: "object", XPreserveUnknownFields: ptr.To(true),
					}},
				}},
			},
		})
	}
	return out
}

// manifests builds deploy/base as `kubectl kustomize deploy/base` does.
func manifests(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	return kustomize(t, "deploy/base")
}

// kustomize builds a kustomization of the repository (a path like deploy/base).
func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join(testenv.RepoRoot(), dir))
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range m.Resources() {
		obj, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
	return out
}

// manifest returns the object of the base with this kind and name.
func manifest(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, u := range manifests(t) {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	t.Fatalf("deploy/base has no %s %s", kind, name)
	return nil
}

// describe names an object for messages: Kind namespace/name.
func describe(u *unstructured.Unstructured) string {
	if u.GetNamespace() == "" {
		return u.GetKind() + " " + u.GetName()
	}
	return u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName()
}

// installKinds are the objects the permission tests need for real: the ServiceAccounts,
// their roles and bindings, the agent's policies and the configuration.
var installKinds = map[string]bool{
	"ServiceAccount": true, "ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true, "ConfigMap": true,
}

var (
	installOnce sync.Once
	installErr  error
)

// install applies the base's permissions and policies to the cluster (not its workloads
// or webhooks: nothing here serves them).
func install(t *testing.T) {
	t.Helper()
	cluster(t)
	objs := manifests(t)
	installOnce.Do(func() {
		for _, u := range objs {
			if !installKinds[u.GetKind()] {
				continue
			}
			err := admin.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), fieldOwner, client.ForceOwnership)
			if err != nil {
				installErr = fmt.Errorf("%s: %w", describe(u), err)
				return
			}
		}
		// Roles reach the authorizer's cache a moment after they are written.
		installErr = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			for _, c := range []struct {
				user string
				p    probe
			}{
				{agentUser, probe{"", "nodes", "", "", "patch"}},
				{agentUser, probe{"coordination.k8s.io", "leases", v1alpha2.FencingLeaseNamespace, "", "create"}},
				{ctrlUser, probe{"coordination.k8s.io", "leases", namespace, "", "create"}},
				{ctrlUser, probe{"coordination.k8s.io", "leases", corev1.NamespaceNodeLease, "", "list"}},
			} {
				if ok, err := allowed(c.user, c.p); !ok || err != nil {
					return false, nil
				}
			}
			return true, nil
		})
	})
	if installErr != nil {
		t.Fatalf("installing deploy/base's permissions: %v", installErr)
	}
}

// placeholderPod creates a pod bound to node (no scheduler or kubelet runs here), run by
// serviceAccount ("" for none).
func placeholderPod(t *testing.T, ns, name, node, serviceAccount string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			NodeName:           node,
			ServiceAccountName: serviceAccount,
			Containers:         []corev1.Container{{Name: "placeholder", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	if err := admin.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// tokenFor issues a ServiceAccount token through the TokenRequest API, bound to pod when
// it is not nil, as the kubelet does for a Pod's projected token.
func tokenFor(t *testing.T, serviceAccount string, pod *corev1.Pod) string {
	t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	got, err := adminCS.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", serviceAccount, err)
	}
	return got.Status.Token
}

// configFor is a client configuration that authenticates with token only.
func configFor(token string) *rest.Config {
	c := rest.AnonymousClientConfig(cfg)
	c.BearerToken = token
	c.QPS, c.Burst = 200, 400
	return c
}

// newNamespace makes a namespace for one test.
func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}
	if err := admin.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// eventually polls cond until it holds or the deadline passes; cond says what it saw.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, seen := cond()
		last = seen
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s; last seen: %s", what, timeout, last)
	}
}

// refusals records the requests an API client was refused (HTTP 403).
type refusals struct {
	mu   sync.Mutex
	seen []string
}

func (r *refusals) wrap(who string, c *rest.Config) *rest.Config {
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil && resp.StatusCode == http.StatusForbidden {
				r.mu.Lock()
				r.seen = append(r.seen, fmt.Sprintf("%s: %s %s", who, req.Method, req.URL.RequestURI()))
				r.mu.Unlock()
			}
			return resp, err
		})
	})
	return c
}

func (r *refusals) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// ferryBin is the ferry binary the tests run: FERRY_BIN, or bin/ferry.
func ferryBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("FERRY_BIN")
	if bin == "" {
		bin = filepath.Join(testenv.RepoRoot(), "bin", "ferry")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no ferry binary (FERRY_BIN, or bin/ferry: make build): %v", err)
	}
	return bin
}

// writeKubeconfig writes to path a kubeconfig for the cluster of c that authenticates with
// token only.
func writeKubeconfig(t *testing.T, path string, c *rest.Config, token string) {
	t.Helper()
	ca := c.CAData
	if len(ca) == 0 {
		var err error
		if ca, err = os.ReadFile(c.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["ferry"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: ca}
	kc.AuthInfos["sa"] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts["ferry"] = &clientcmdapi.Context{Cluster: "ferry", AuthInfo: "sa"}
	kc.CurrentContext = "ferry"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
}
