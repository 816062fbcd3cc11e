package deploy

// The pieces of TestWebhookCertRotatesOnOwnToken that stand in for the cluster: controller
// replicas as processes, the Service as a proxy.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ctrlReplica is a `ferry controller` process in self mode.
type ctrlReplica struct {
	name                    string
	webhookPort, healthPort int
	log                     string
	cmd                     *exec.Cmd
	exited                  chan struct{}
	stopOnce                sync.Once
}

func startCtrlReplica(t *testing.T, bin, kubeconfig, name string) *ctrlReplica {
	t.Helper()
	dir := t.TempDir()
	r := &ctrlReplica{name: name, webhookPort: freeLocalPort(t), healthPort: freeLocalPort(t), log: filepath.Join(dir, "controller.log")}
	storage := filepath.Join(dir, "storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(r.log)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(bin, "controller", "--kubeconfig", kubeconfig,
		"--leader-elect", "--leader-election-namespace", namespace, "--storage-dir", storage, "--vm-network", "none",
		"--metrics-bind-address", "0", "--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", r.healthPort),
		"--webhook-host", "127.0.0.1", "--webhook-port", strconv.Itoa(r.webhookPort), "--webhook-cert-dir", filepath.Join(dir, "webhook"),
		"--webhook-cert-mode", "self", "--webhook-cert-hosts", "127.0.0.1",
		"--webhook-cert-validity", rotCertValidity.String(), "--webhook-ca-validity", rotCAValidity.String())
	r.cmd.Stdout, r.cmd.Stderr = logFile, logFile
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.exited = make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() {
		r.stop(t)
		logFile.Close()
		if t.Failed() {
			t.Logf("replica %s's log (end):\n%s", name, lastLines(mustRead(r.log), 40))
		}
	})
	return r
}

func (r *ctrlReplica) waitReady(t *testing.T) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", r.healthPort)
	hc := &http.Client{Timeout: 2 * time.Second}
	eventually(t, 60*time.Second, "replica "+r.name+" ready (its webhook server serves)", func() (bool, string) {
		select {
		case <-r.exited:
			t.Fatalf("replica %s exited: %s\n%s", r.name, r.cmd.ProcessState, lastLines(mustRead(r.log), 20))
		default:
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}

// served dials the replica as the apiserver would, trusting the caBundle of
// ferry-virtualmachine as it is now, and returns the certificate it shows.
func (r *ctrlReplica) served(ctx context.Context) (*x509.Certificate, error) {
	var cfg admissionregistrationv1.ValidatingWebhookConfiguration
	if err := admin.Get(ctx, client.ObjectKey{Name: "ferry-virtualmachine"}, &cfg); err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(cfg.Webhooks[0].ClientConfig.CABundle) {
		return nil, errors.New("empty caBundle")
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", r.webhookPort),
		&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

func (r *ctrlReplica) stop(t *testing.T) {
	r.stopOnce.Do(func() {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(30 * time.Second):
			t.Errorf("replica %s did not stop within 30s of SIGTERM", r.name)
			_ = r.cmd.Process.Kill()
			<-r.exited
		}
	})
}

// webhookProxy passes each connection to the next replica in turn that answers, as a
// Service does.
type webhookProxy struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []int
	next     int
	conns    []net.Conn
}

// startWebhookProxy listens on addr ("127.0.0.1:0": any port).
func startWebhookProxy(t *testing.T, addr string) *webhookProxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &webhookProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *webhookProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *webhookProxy) add(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.backends = append(p.backends, port)
}

func (p *webhookProxy) forward(c net.Conn) {
	p.mu.Lock()
	if len(p.backends) == 0 {
		p.mu.Unlock()
		c.Close()
		return
	}
	k := p.next % len(p.backends)
	ports := append(slices.Clone(p.backends[k:]), p.backends[:k]...)
	p.next++
	p.mu.Unlock()
	// The next replica in turn, or the one after it if that one is down (killed).
	var b net.Conn
	for _, port := range ports {
		var err error
		if b, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second); err == nil {
			break
		}
	}
	if b == nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, b)
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
	<-done
	c.Close()
	b.Close()
}

// writeTokenKubeconfig writes a kubeconfig for this cluster that authenticates with token.
func writeTokenKubeconfig(t *testing.T, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	writeKubeconfig(t, path, cfg, token)
	return path
}

func clientFor(token string) (client.Client, error) {
	return client.New(configFor(token), client.Options{Scheme: admin.Scheme()})
}

func freeLocalPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func grepLines(out []byte, word string) string {
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(strings.ToLower(l), word) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func mustRead(path string) []byte {
	out, err := os.ReadFile(path)
	if err != nil {
		return []byte(err.Error())
	}
	return out
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
