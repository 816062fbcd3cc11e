package personality

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// TestMain re-executes this test binary as kube-apiserver or etcd when it is
// invoked through a symlink with one of those names, so the envtest test
// below needs no second (very large) link.
func TestMain(m *testing.M) {
	if run := Lookup(os.Args[0]); run != nil {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestLookup(t *testing.T) {
	for prog, want := range map[string]bool{
		"/usr/local/bin/kube-apiserver": true,
		"etcd":                          true,
		"etcd.exe":                      true,
		"/bin/ferry":                    false,
		"etcdctl":                       false,
	} {
		if got := Lookup(prog) != nil; got != want {
			t.Errorf("Lookup(%q) = %v, want %v", prog, got, want)
		}
	}
}

func TestEnvtestWithPersonalities(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	assets := t.TempDir()
	for _, name := range []string{KubeAPIServerName, EtcdName} {
		if err := os.Symlink(self, filepath.Join(assets, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("KUBEBUILDER_ASSETS", assets)

	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	t0 := time.Now()
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("envtest start: %v", err)
	}
	t.Logf("envtest control plane up in %s", time.Since(t0))
	defer func() {
		t1 := time.Now()
		if err := env.Stop(); err != nil {
			t.Errorf("envtest stop: %v", err)
		}
		t.Logf("envtest stop took %s", time.Since(t1))
	}()

	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "personality", Namespace: "default"},
		Data:       map[string]string{"hello": "ferry"},
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ConfigMap: %v", err)
	}
	got, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "personality", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get ConfigMap: %v", err)
	}
	if got.Data["hello"] != "ferry" {
		t.Fatalf("ConfigMap data = %v", got.Data)
	}
	info, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	t.Logf("kube-apiserver personality reports %s", info.GitVersion)
}
