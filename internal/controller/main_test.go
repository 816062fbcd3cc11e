package controller_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/controller/migration"
	"github.com/ferryvm/ferry/internal/ipam"
	"github.com/ferryvm/ferry/internal/netguard"
	"github.com/ferryvm/ferry/internal/testenv"
)

var (
	k8s client.Client
	// restCfg reaches the test's apiserver as its admin (for `ferry v`, which reads a
	// kubeconfig).
	restCfg    *rest.Config
	storageDir string
	imagesDir  string
)

// TestMain runs the real controller manager against a real apiserver and etcd.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	env, cfg, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller tests:", err)
		return 1
	}
	defer env.Stop()
	tmp, err := os.MkdirTemp("", "ferry-ctrl-test-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(tmp)
	storageDir = filepath.Join(tmp, "storage")
	imagesDir = filepath.Join(tmp, "sources")
	if err := os.MkdirAll(imagesDir, 0o755); err != nil {
		panic(err)
	}
	restCfg = cfg
	k8s, err = client.New(cfg, client.Options{Scheme: controller.NewScheme()})
	if err != nil {
		panic(err)
	}
	importGuard, err := netguard.New([]string{"127.0.0.1"}, netguard.DefaultDenied)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- controller.Run(ctx, cfg, controller.Options{
			StorageDir: storageDir, IPRange: ipam.DefaultRanges, LauncherImage: "ferry/launcher:test",
			// file:// images are read from the test's sources only; an import stops at
			// 64 MiB, so that refusing an endless download writes little.
			ImageSourceDirs: []string{imagesDir}, MaxImageSize: testMaxImageSize,
			// The tests' servers are on 127.0.0.1; the rest of loopback is denied
			// (TestImportsKeepOffTheClusterNetworks).
			ImportDestinations: importGuard,
			// Uploads on a loopback listener of their own, in plain HTTP.
			Upload:      controller.UploadOptions{Addr: "127.0.0.1:0"},
			MetricsAddr: "0", HealthAddr: "0", Migration: migration.DefaultConfig(),
		})
	}()
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "controller manager:", err)
		code = 1
	}
	return code
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

// newNamespace makes a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// writeRawImage writes a small raw disk image with a boot signature.
func writeRawImage(t *testing.T, name string) string {
	t.Helper()
	b := make([]byte, 1<<20)
	b[510], b[511] = 0x55, 0xAA
	p := filepath.Join(imagesDir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
