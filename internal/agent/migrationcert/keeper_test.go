package migrationcert

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/migrationtls"
)

func testCA(t *testing.T) *migrationtls.CA {
	t.Helper()
	certPEM, keyPEM, err := migrationtls.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := migrationtls.ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestPlan(t *testing.T) {
	now := time.Now()
	ca := testCA(t)
	fresh, _ := ca.NodeCredentials("node-1", now, 9*time.Hour)
	old, _ := ca.NodeCredentials("node-1", now.Add(-10*time.Hour), 9*time.Hour)
	for _, tc := range []struct {
		name    string
		c       *migrationtls.Credentials
		err     error
		node    string
		due     time.Time
		because string
	}{
		{"none yet", nil, fmt.Errorf("%w in /x", migrationtls.ErrNoCredentials), "node-1", now, "no migration certificate"},
		{"unreadable", nil, errors.New("migration credentials in /x: certificate and key: tls: private key does not match public key"), "node-1", now, "does not match"},
		{"another node's (renamed node, copied state)", fresh, nil, "node-2", now, "not node node-2"},
		{"expired", old, nil, "node-1", now, "expired"},
		{"fresh: after two thirds of its life", fresh, nil, "node-1", migrationtls.RenewAt(fresh.Cert), "two thirds"},
	} {
		due, why := plan(tc.c, tc.err, tc.node, now)
		if !due.Equal(tc.due) || !strings.Contains(why, tc.because) {
			t.Errorf("%s: due %v (%s), want %v (%q)", tc.name, due, why, tc.due, tc.because)
		}
	}
	if at := migrationtls.RenewAt(fresh.Cert); at.Before(now.Add(5*time.Hour)) || at.After(now.Add(6*time.Hour)) {
		t.Errorf("a 9h certificate is renewed at %v, %v from now; want about 6h", at, at.Sub(now))
	}
}

// signer answers CSRs of the fake clientset once the keeper watches, as the controller does.
type signer struct {
	cs       *fake.Clientset
	ca       *migrationtls.CA
	watching chan struct{}
	deny     bool
}

func newSigner(t *testing.T, deny bool) *signer {
	s := &signer{cs: fake.NewClientset(), ca: testCA(t), watching: make(chan struct{}, 100), deny: deny}
	// The fake clientset makes up no names: do what kube-apiserver does for generateName.
	n := 0
	s.cs.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		csr := a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest)
		if csr.Name == "" {
			n++
			csr.Name = fmt.Sprintf("%s%05d", csr.GenerateName, n)
		}
		return false, nil, nil
	})
	s.cs.PrependWatchReactor("certificatesigningrequests", func(k8stesting.Action) (bool, watch.Interface, error) {
		s.watching <- struct{}{}
		return false, nil, nil
	})
	return s
}

// answer waits until the keeper watches and answers every pending request.
func (s *signer) answer(t *testing.T) {
	t.Helper()
	select {
	case <-s.watching:
	case <-time.After(30 * time.Second):
		t.Fatal("the keeper never watched its request")
	}
	// The fake clientset's watch starts a moment after the reactor ran.
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := s.cs.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for i := range list.Items {
			csr := &list.Items[i]
			if answered(csr) {
				continue
			}
			if s.deny {
				csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
					Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "NotTheNodesAgent", Message: "requested by mallory"})
			} else {
				b, _ := pem.Decode(csr.Spec.Request)
				req, err := x509.ParseCertificateRequest(b.Bytes)
				if err != nil {
					return false, err
				}
				if csr.Status.Certificate, err = s.ca.Sign(req, strings.TrimPrefix(req.Subject.CommonName, migrationtls.NodeCNPrefix), time.Now(), time.Hour); err != nil {
					return false, err
				}
			}
			if _, err := s.cs.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{}); err != nil {
				return false, err
			}
		}
		return len(list.Items) > 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (s *signer) requests(t *testing.T) []certificatesv1.CertificateSigningRequest {
	list, err := s.cs.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func TestRunGetsAndKeepsTheCertificate(t *testing.T) {
	s := newSigner(t, false)
	dir := filepath.Join(t.TempDir(), migrationtls.DirName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, Options{Client: s.cs, Node: "node-1", Dir: dir, Log: testr.New(t)})
		close(done)
	}()
	defer func() { cancel(); <-done }()
	s.answer(t)
	var c *migrationtls.Credentials
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		var err error
		c, err = migrationtls.Load(dir)
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("no credentials in %s", dir)
	}
	if err := c.Check("node-1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v", st.Mode())
	}
	if st, _ := os.Stat(filepath.Join(dir, hypervisor.TLSServerKeyFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode())
	}
	reqs := s.requests(t)
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0].Spec
	if r.SignerName != migrationtls.SignerName || len(r.Usages) != 4 || r.ExpirationSeconds == nil || *r.ExpirationSeconds != int32(migrationtls.DefaultDuration/time.Second) ||
		!strings.HasPrefix(reqs[0].GenerateName, "ferry-migration-node-1-") {
		t.Errorf("request %s: %+v", reqs[0].GenerateName, r)
	}
	// The private key stays on the node: the request holds the public key only.
	block, _ := pem.Decode(c.KeyPEM)
	if bytes.Contains(r.Request, block.Bytes) || bytes.Contains(r.Request, c.KeyPEM) {
		t.Error("the request carries the private key")
	}
}

// A certificate two thirds through its life is replaced, with a new key.
func TestRunRenews(t *testing.T) {
	s := newSigner(t, false)
	dir := filepath.Join(t.TempDir(), migrationtls.DirName)
	old, err := s.ca.NodeCredentials("node-1", time.Now().Add(-50*time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrationtls.Write(dir, old); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, Options{Client: s.cs, Node: "node-1", Dir: dir, Log: testr.New(t)})
		close(done)
	}()
	defer func() { cancel(); <-done }()
	s.answer(t)
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		c, err := migrationtls.Load(dir)
		return err == nil && c.Cert.SerialNumber.Cmp(old.Cert.SerialNumber) != 0, nil
	})
	if err != nil {
		t.Fatal("the old certificate was not replaced")
	}
	c, _ := migrationtls.Load(dir)
	if bytes.Equal(c.KeyPEM, old.KeyPEM) {
		t.Error("the renewal kept the old key")
	}
}

// A denied request is reported and asked again later, never written.
func TestRunDenied(t *testing.T) {
	s := newSigner(t, true)
	dir := filepath.Join(t.TempDir(), migrationtls.DirName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, Options{Client: s.cs, Node: "node-1", Dir: dir, RetryMin: 10 * time.Millisecond, Log: testr.New(t)})
		close(done)
	}()
	defer func() { cancel(); <-done }()
	s.answer(t)
	s.answer(t)
	if n := len(s.requests(t)); n < 2 {
		t.Errorf("%d requests after a denial, want a second one", n)
	}
	if _, err := migrationtls.Load(dir); !errors.Is(err, migrationtls.ErrNoCredentials) {
		t.Errorf("credentials after denials: %v", err)
	}
}
