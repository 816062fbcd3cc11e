package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/ferryvm/ferry/internal/pki"
)

func freeTestPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// poll calls cond every 200ms until it returns true or the deadline passes.
func poll(t *testing.T, deadline time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	end := time.Now().Add(deadline)
	var lastErr error
	for time.Now().Before(end) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not done within %s (last error: %v)", what, deadline, lastErr)
}

func TestStartStopRestart(t *testing.T) {
	dir := t.TempDir()
	o := Options{DataDir: dir, SecurePort: freeTestPort(t), NodeMonitorGracePeriod: 40 * time.Second}
	ctx := context.Background()

	t0 := time.Now()
	cp, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("first start: ready in %s", time.Since(t0))
	stopped := false
	defer func() {
		if !stopped {
			_ = cp.Stop(5 * time.Second)
		}
	}()

	if _, err := Start(ctx, o); err == nil {
		t.Fatal("second concurrent Start succeeded, want error")
	}

	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	body, err := cs.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil || string(body) != "ok" {
		t.Fatalf("/readyz = %q, %v", body, err)
	}
	if _, err := os.Stat(cp.Kubeconfig); err != nil {
		t.Fatalf("admin kubeconfig: %v", err)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ferry-test"}}
	created, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	// The serviceaccount controller (kube-controller-manager) creates the
	// default ServiceAccount; the root-ca publisher creates kube-root-ca.crt.
	tSA := time.Now()
	poll(t, 90*time.Second, "default ServiceAccount", func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts("ferry-test").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
	t.Logf("default ServiceAccount appeared after %s", time.Since(tSA))
	poll(t, 60*time.Second, "kube-root-ca.crt", func() (bool, error) {
		_, err := cs.CoreV1().ConfigMaps("ferry-test").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil, err
	})
	// TokenRequest exercises the service-account signing key.
	tok, err := cs.CoreV1().ServiceAccounts("ferry-test").CreateToken(ctx, "default", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil || tok.Status.Token == "" {
		t.Fatalf("token request: %v", err)
	}

	checkIssuedCerts(t, cp)

	t1 := time.Now()
	if err := cp.Stop(5 * time.Second); err != nil {
		t.Errorf("Stop: %v", err)
	}
	stopped = true
	stopTime := time.Since(t1)
	t.Logf("stop took %s", stopTime)
	if stopTime > 6*time.Second {
		t.Errorf("stop took %s, want < 6s", stopTime)
	}
	if fi, err := os.Stat(filepath.Join(dir, "logs", "kube-apiserver.log")); err != nil || fi.Size() == 0 {
		t.Errorf("expected kube-apiserver log in DataDir/logs: %v", err)
	}

	// Restart on the same DataDir (same process: exercises global state).
	t2 := time.Now()
	cp2, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer func() { _ = cp2.Stop(5 * time.Second) }()
	t.Logf("restart: ready in %s", time.Since(t2))
	cs2, err := kubernetes.NewForConfig(cp2.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs2.CoreV1().Namespaces().Get(ctx, "ferry-test", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("namespace after restart: %v", err)
	}
	if got.UID != created.UID {
		t.Fatalf("namespace UID changed")
	}
	// Controllers run again after restart.
	ns2 := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ferry-test-2"}}
	if _, err := cs2.CoreV1().Namespaces().Create(ctx, ns2, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace after restart: %v", err)
	}
	poll(t, 90*time.Second, "default ServiceAccount after restart", func() (bool, error) {
		_, err := cs2.CoreV1().ServiceAccounts("ferry-test-2").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, err
		}
		return err == nil, err
	})
	t3 := time.Now()
	if err := cp2.Stop(5 * time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	t.Logf("second stop took %s", time.Since(t3))
}

func checkIssuedCerts(t *testing.T, cp *ControlPlane) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cp.CAData)

	certPEM, keyPEM, err := cp.IssueClientCert("system:node:n1", []string{"system:nodes"})
	if err != nil || len(keyPEM) == 0 {
		t.Fatalf("IssueClientCert: %v", err)
	}
	c, err := pki.ParseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client cert does not verify: %v", err)
	}
	if c.Subject.CommonName != "system:node:n1" || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "system:nodes" {
		t.Fatalf("client cert subject = %v", c.Subject)
	}

	dir, certName, _, err := cp.IssueServingCert("webhook", "webhook.ferry-system.svc", "127.0.0.1")
	if err != nil {
		t.Fatalf("IssueServingCert: %v", err)
	}
	if certPEM, err = os.ReadFile(filepath.Join(dir, certName)); err != nil {
		t.Fatal(err)
	}
	if c, err = pki.ParseCert(certPEM); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"webhook.ferry-system.svc", "127.0.0.1"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: h}); err != nil {
			t.Fatalf("serving cert for %s: %v", h, err)
		}
	}

	// The node identity is accepted by the apiserver (Node authorizer).
	cfg := *cp.RESTConfig
	cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData, _ = cp.IssueClientCert("system:node:n1", []string{"system:nodes"})
	cfg.TLSClientConfig.CertFile, cfg.TLSClientConfig.KeyFile = "", ""
	cs, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Authorized (Node authorizer lets a node read its own Node): NotFound,
	// not Forbidden or Unauthorized.
	_, err = cs.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("node identity get own node: got %v, want NotFound", err)
	}
}

// A Start whose context ends while the apiserver runs its post-start hooks (a Ctrl-C of
// ferry up during start-up) returns an error and leaves the process alive: stopped that
// early, the apiserver's hooks fail and call klog.Fatalf, and ferry up used to exit without
// its clean-up (the nodes' network namespaces stayed behind).
func TestStartCancelledWhileStarting(t *testing.T) {
	o := Options{DataDir: t.TempDir(), SecurePort: freeTestPort(t)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// The port answers once the apiserver serves, before its post-start hooks ended.
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(o.SecurePort))
		_ = wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return false, nil
			}
			c.Close()
			cancel()
			return true, nil
		})
	}()
	cp, err := Start(ctx, o)
	if err == nil {
		cp.Stop(5 * time.Second)
		t.Fatal("Start returned a control plane after its context ended")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want the context's error", err)
	}
	// All of it stopped: the port is free and the process may start another.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.SecurePort)), time.Second); err == nil {
		c.Close()
		t.Error("the apiserver still serves after Start failed")
	}
	runningMu.Lock()
	defer runningMu.Unlock()
	if running {
		t.Error("a control plane still counts as running in this process")
	}
}
