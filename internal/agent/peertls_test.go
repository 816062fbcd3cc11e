package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/ferryvm/ferry/internal/migrationtls"
)

func newCA(t testing.TB) *migrationtls.CA {
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

// nodeCreds is node's certificate from ca, valid for an hour from now.
func nodeCreds(t testing.TB, ca *migrationtls.CA, node string) *migrationtls.Credentials {
	t.Helper()
	c, err := ca.NodeCredentials(node, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fixed makes a peers.creds that always returns c (or, with c nil, that the node has none).
func fixed(c *migrationtls.Credentials) func() (*migrationtls.Credentials, error) {
	return func() (*migrationtls.Credentials, error) {
		if c == nil {
			return nil, fmt.Errorf("%w in /nowhere", migrationtls.ErrNoCredentials)
		}
		return c, nil
	}
}

// freePort is a port free on 127.0.0.1, which the tests' nodes share on addresses of their
// own (127.0.0.x), as nodes share the peer port.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func listen(t *testing.T, ip string, port int) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// servePeer runs node's peer endpoint on ip (listening when it returns) until the test ends.
func servePeer(t *testing.T, ip string, port int, node string, reachable bool, creds func() (*migrationtls.Credentials, error)) {
	t.Helper()
	p := &peers{self: node, creds: creds, reachable: func() (bool, time.Time) { return reachable, time.Now() }}
	ln := listen(t, ip, port)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.serveOn(ctx, ln, testr.New(t))
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// impostor answers on ip what a node cut off from the control plane would, for node,
// without being that node: over plain HTTP (cert nil) or over TLS with cert. asked counts
// the connections it got.
type impostor struct {
	asked atomic.Int32
}

func serveImpostor(t *testing.T, ip string, port int, node string, cert *tls.Certificate) *impostor {
	t.Helper()
	imp := &impostor{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+peerPath, func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(peerAnswer{Node: node, Reachable: false, LastRenew: time.Now()})
	})
	srv := &http.Server{Handler: mux, ErrorLog: stdlogDiscard(), ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			imp.asked.Add(1)
		}
	}}
	ln := listen(t, ip, port)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if cert == nil {
			_ = srv.Serve(ln)
			return
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequestClientCert}
		_ = srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return imp
}

func pairOf(t testing.TB, c *migrationtls.Credentials) *tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &pair
}

// signedAs is a certificate of ca for the common name cn and the DNS name dns, which the
// signer would refuse to issue unless they name one node.
func signedAs(t *testing.T, ca *migrationtls.CA, cn, dns string) *migrationtls.Credentials {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Sign(req, dns, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := pem.Decode(chain)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	c, err := migrationtls.Parse(pem.EncodeToMemory(first), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPeerCheckCountsOnlyTheNodeAsked: node a, cut off from the control plane, asks its
// one peer b, which says it is cut off too: two of two nodes, an outage, and a keeps its
// VMs. The answer counts only when it comes from b, proven by b's certificate of the
// cluster's CA; whatever else answers at b's address counts as silence (a then fences
// itself), however it answers.
func TestPeerCheckCountsOnlyTheNodeAsked(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	port := freePort(t)
	a := nodeCreds(t, ca, "a")
	b := nodeCreds(t, ca, "b")
	for i, tc := range []struct {
		name   string
		serve  func(ip string)
		counts bool
		says   string
	}{
		{"b itself", func(ip string) { servePeer(t, ip, port, "b", false, fixed(b)) }, true, ""},
		{"plain HTTP, as the agents spoke before", func(ip string) { serveImpostor(t, ip, port, "b", nil) }, false, "b: "},
		{"TLS, node c's certificate of the cluster's CA", func(ip string) {
			serveImpostor(t, ip, port, "b", pairOf(t, nodeCreds(t, ca, "c")))
		}, false, "valid for c, not b"},
		{"TLS, a certificate of the cluster's CA for node c, b its DNS name", func(ip string) {
			serveImpostor(t, ip, port, "b", pairOf(t, signedAs(t, ca, migrationtls.NodeCN("c"), "b")))
		}, false, `for "system:ferry-node:c", not node b`},
		{"TLS, a certificate for b from another CA", func(ip string) {
			serveImpostor(t, ip, port, "b", pairOf(t, nodeCreds(t, other, "b")))
		}, false, "unknown authority"},
		{"TLS, b's own certificate, an answer for another node", func(ip string) {
			serveImpostor(t, ip, port, "c", pairOf(t, b))
		}, false, `answered for node "c"`},
		{"b without a certificate yet", func(ip string) { servePeer(t, ip, port, "b", false, fixed(nil)) }, false, "b: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip := fmt.Sprintf("127.0.0.%d", 40+i)
			tc.serve(ip)
			me := &peers{self: "a", port: port, maxUnreachable: 0.49, creds: fixed(a), addrs: map[string]string{"b": ip}}
			outage, seen := me.outage(context.Background(), 5*time.Second)
			t.Logf("seen: %s", seen)
			if outage != tc.counts {
				t.Fatalf("outage %v, want %v: %s", outage, tc.counts, seen)
			}
			if !strings.Contains(seen, tc.says) {
				t.Errorf("seen %q does not say %q", seen, tc.says)
			}
		})
	}
}

// TestPeerEndpointAnswersOnlyNodes: b answers a question only over TLS from a Ferry node's
// certificate of its CA.
func TestPeerEndpointAnswersOnlyNodes(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	port := freePort(t)
	servePeer(t, "127.0.0.50", port, "b", true, fixed(nodeCreds(t, ca, "b")))
	addr := net.JoinHostPort("127.0.0.50", strconv.Itoa(port))
	ask := func(client *tls.Certificate) (peerAnswer, error) {
		cfg := &tls.Config{RootCAs: rootsOf(ca), ServerName: "b"}
		if client != nil {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client, nil }
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return askPeer(ctx, addr, "b", cfg)
	}
	a, err := ask(pairOf(t, nodeCreds(t, ca, "a")))
	if err != nil || a.Node != "b" || !a.Reachable {
		t.Fatalf("node a's question: %+v, %v; want b's answer", a, err)
	}
	for name, cert := range map[string]*tls.Certificate{
		"no certificate":                     nil,
		"node a's certificate of another CA": pairOf(t, nodeCreds(t, other, "a")),
		"the CA's certificate for no node":   pairOf(t, signedAs(t, ca, "mallory", "mallory")),
	} {
		if a, err := ask(cert); err == nil {
			t.Errorf("%s: answered %+v", name, a)
		}
	}
	// Plain HTTP gets no answer either.
	resp, err := http.Get("http://" + addr + peerPath)
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if _, derr := decodeAnswer(bytes.NewReader(body), "b"); derr == nil {
			t.Errorf("plain HTTP answered: %s %s", resp.Status, body)
		}
	}
}

// TestPeerCheckReadsRenewedCredentials: both sides read the node's credentials from its
// directory at each question, as the keeper rewrites them: a certificate that expired
// does not serve, its renewal does at once; after the CA is replaced, the nodes trust each
// other again once both have the new CA's certificates.
func TestPeerCheckReadsRenewedCredentials(t *testing.T) {
	ca, next := newCA(t), newCA(t)
	port := freePort(t)
	dirA, dirB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	write := func(dir string, c *migrationtls.Credentials) {
		t.Helper()
		if err := migrationtls.Write(dir, c); err != nil {
			t.Fatal(err)
		}
	}
	load := func(dir string) func() (*migrationtls.Credentials, error) {
		return func() (*migrationtls.Credentials, error) { return migrationtls.Load(dir) }
	}
	servePeer(t, "127.0.0.60", port, "b", false, load(dirB))
	me := &peers{self: "a", port: port, maxUnreachable: 0.49, creds: load(dirA), addrs: map[string]string{"b": "127.0.0.60"}}
	expired, err := ca.NodeCredentials("b", time.Now().Add(-3*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name   string
		do     func()
		outage bool
	}{
		{"neither node has a certificate yet", func() {}, false},
		{"a has its certificate, b none", func() { write(dirA, nodeCreds(t, ca, "a")) }, false},
		{"b's has expired", func() { write(dirB, expired) }, false},
		{"b's renewed", func() { write(dirB, nodeCreds(t, ca, "b")) }, true},
		{"b has the new CA's certificate, a the old", func() { write(dirB, nodeCreds(t, next, "b")) }, false},
		{"both the new CA's", func() { write(dirA, nodeCreds(t, next, "a")) }, true},
	} {
		step.do()
		outage, seen := me.outage(context.Background(), 5*time.Second)
		if outage != step.outage {
			t.Errorf("%s: outage %v, want %v: %s", step.name, outage, step.outage, seen)
		}
	}
}

// TestPeerCheckWithoutACertificate: a node without a certificate of its own cannot ask,
// and sees no outage (it is left to its watchdog), whatever its peers would say; it says
// why.
func TestPeerCheckWithoutACertificate(t *testing.T) {
	ca := newCA(t)
	port := freePort(t)
	servePeer(t, "127.0.0.70", port, "b", false, fixed(nodeCreds(t, ca, "b")))
	for name, c := range map[string]*migrationtls.Credentials{
		"none":                nil,
		"another node's":      nodeCreds(t, ca, "z"),
		"the CA's for no one": signedAs(t, ca, "mallory", "mallory"),
	} {
		me := &peers{self: "a", port: port, maxUnreachable: 0.49, creds: fixed(c), addrs: map[string]string{"b": "127.0.0.70"}}
		outage, seen := me.outage(context.Background(), 5*time.Second)
		if outage || !strings.Contains(seen, "no certificate to ask its peers with") {
			t.Errorf("%s: outage %v (%s), want none, for want of a certificate", name, outage, seen)
		}
	}
}

// FuzzDecodeAnswer: a peer's answer is network input. Decoding never panics, reads at most
// maxAnswer bytes, and what it accepts names the node asked and says whether it reaches the
// control plane, and survives a round trip.
func FuzzDecodeAnswer(f *testing.F) {
	for _, s := range []string{
		`{"node":"b","controlPlaneReachable":false,"lastRenewal":"2026-01-02T03:04:05Z"}`,
		`{"node":"b","controlPlaneReachable":true}` + "\n",
		`{"node":"b"}`,
		`{"node":"c","controlPlaneReachable":false}`,
		`{"node":"b","controlPlaneReachable":false}{"node":"b","controlPlaneReachable":true}`,
		`{"node":"b","controlPlaneReachable":null}`,
		`{"node":"b","controlPlaneReachable":"false"}`,
		`[]`, `null`, ``, `{"node":"b","controlPlaneReachable":false,"x":"` + strings.Repeat("y", maxAnswer) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &countingReader{r: bytes.NewReader(b)}
		a, err := decodeAnswer(r, "b")
		if r.n > maxAnswer {
			t.Fatalf("read %d bytes, more than %d", r.n, maxAnswer)
		}
		if err != nil {
			return
		}
		if a.Node != "b" {
			t.Fatalf("accepted an answer for %q", a.Node)
		}
		// What is past maxAnswer is not read.
		var w peerAnswerWire
		if json.Unmarshal(b[:min(len(b), maxAnswer)], &w) != nil || w.Reachable == nil || *w.Reachable != a.Reachable {
			t.Fatalf("accepted %q as %+v", b, a)
		}
		again, err := json.Marshal(a)
		if err != nil {
			return // a time beyond what JSON holds (year > 9999) is refused in encoding only
		}
		back, err := decodeAnswer(bytes.NewReader(again), "b")
		if err != nil || back.Reachable != a.Reachable || !back.LastRenew.Equal(a.LastRenew) {
			t.Fatalf("%s → %+v → %s → %+v, %v", b, a, again, back, err)
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func stdlogDiscard() *stdlog.Logger { return stdlog.New(io.Discard, "", 0) }

func rootsOf(ca *migrationtls.CA) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM())
	return pool
}
