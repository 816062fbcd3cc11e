package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	stdlog "log"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryvm/ferry/internal/migrationtls"
)

// DefaultPeerPort is where agents answer each other about their contact with the control
// plane.
const DefaultPeerPort = 10270

// peerPath is the agents' question to each other: can you reach the control plane?
const peerPath = "/fencing/v1/control-plane"

// peerAnswer is an agent's answer: whether its Lease renewals still succeed. It is sent
// over mutual TLS with the nodes' migration certificates (peertls.go).
type peerAnswer struct {
	Node      string    `json:"node"`
	Reachable bool      `json:"controlPlaneReachable"`
	LastRenew time.Time `json:"lastRenewal"`
}

// peers tells a node cut off from the control plane from a control plane that is down for
// everyone. A node that cannot renew its Lease stops feeding its watchdog, so it resets and
// the cluster restarts its VMs elsewhere: right for a failed or isolated node, wrong when the
// apiserver itself is down (every node would reset, and every VM with it). So before it
// gives up, the node asks the other agents; when more than the cluster's maxUnreachable
// share of all nodes (itself included) cannot reach the control plane either, the fencing
// controller's storm guard holds too, and the node keeps its VMs: it feeds the watchdog.
// Only answers from the nodes asked, proven by their certificates, count (peertls.go).
type peers struct {
	self string
	port int
	// creds reads the node's migration certificate, key and CA (package migrationcert keeps
	// them), the node's identity towards its peers both ways.
	creds func() (*migrationtls.Credentials, error)
	// maxUnreachable is the share the fencing controller's storm guard allows.
	maxUnreachable float64

	mu    sync.Mutex
	addrs map[string]string // node → InternalIP, of every node of the cluster but this one
	// reachable says whether this node's own renewals succeed.
	reachable func() (bool, time.Time)
	// down, if set, says whether the node's network is down (simulated nodes): it then
	// neither asks nor answers.
	down func() bool
}

// refresh remembers the cluster's nodes and their addresses (while the API answers).
func (p *peers) refresh(ctx context.Context, c client.Reader) error {
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return err
	}
	addrs := map[string]string{}
	for _, n := range nodes.Items {
		if n.Name == p.self {
			continue
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				addrs[n.Name] = a.Address
			}
		}
	}
	p.mu.Lock()
	p.addrs = addrs
	p.mu.Unlock()
	return nil
}

// keepFresh refreshes the peers' addresses every interval until ctx ends. Nodes come
// and go rarely, and an outage needs the addresses read before it. For the first two
// intervals it reads them fifteen times as often: nodes that start together register
// one by one, and an agent that read the list before its peers registered would know
// none of them for a whole interval (an outage then resets its node).
func (p *peers) keepFresh(ctx context.Context, c client.Reader, every time.Duration, log logr.Logger) {
	start := time.Now()
	for {
		if err := p.refresh(ctx, c); err != nil && ctx.Err() == nil {
			log.Error(err, "Could not read the peers' addresses")
		}
		next := every
		if time.Since(start) < 2*every {
			next = every / 15
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// serve answers peers on addr until ctx ends: over TLS, to Ferry nodes' certificates only.
// Until the node has its certificate, every handshake fails: its peers count it as silent.
func (p *peers) serve(ctx context.Context, addr string, log logr.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("peer endpoint: %w", err)
	}
	return p.serveOn(ctx, ln, log)
}

// serveOn answers peers on ln until ctx ends.
func (p *peers) serveOn(ctx context.Context, ln net.Listener, log logr.Logger) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+peerPath, func(w http.ResponseWriter, _ *http.Request) {
		if p.down != nil && p.down() {
			panic(http.ErrAbortHandler) // no answer: the connection just drops
		}
		ok, last := p.reachable()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(peerAnswer{Node: p.self, Reachable: ok, LastRenew: last})
	})
	srv := &http.Server{
		Handler: mux, ReadHeaderTimeout: time.Second,
		TLSConfig: &tls.Config{GetConfigForClient: p.serverConfig},
		ErrorLog:  stdlog.New(handshakeLog{log}, "", 0),
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ServeTLS(ln, "", ""); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// outage asks every peer at once (each within timeout) and tells whether the control plane
// is unreachable from more than maxUnreachable of all nodes, counting this one, which
// cannot reach it, and from at least one peer. Only authenticated answers count: a node
// without a valid certificate of its own asks no one, and so sees no outage. It also says
// what it saw, for the log.
func (p *peers) outage(ctx context.Context, timeout time.Duration) (bool, string) {
	if p.down != nil && p.down() {
		return false, "the node's network is down: no peer can be asked"
	}
	id, err := p.identity()
	if err != nil {
		return false, "this node has no certificate to ask its peers with, so none can confirm an outage: " + err.Error()
	}
	p.mu.Lock()
	addrs := make(map[string]string, len(p.addrs))
	for n, a := range p.addrs {
		addrs[n] = a
	}
	p.mu.Unlock()
	total := len(addrs) + 1
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	down, answered := 1, 0
	failed := map[string]string{}
	var wg sync.WaitGroup
	for node, addr := range addrs {
		wg.Go(func() {
			a, err := askPeer(ctx, net.JoinHostPort(addr, strconv.Itoa(p.port)), node, id.clientConfig(node))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[node] = err.Error()
				return
			}
			answered++
			if !a.Reachable {
				down++
			}
		})
	}
	wg.Wait()
	seen := fmt.Sprintf("%d of %d nodes cannot reach the control plane (%d of %d peers answered)", down, total, answered, total-1)
	if len(failed) > 0 {
		seen += "; not counted: " + sample(failed, 3)
	}
	// This node's own trouble proves nothing: at least one peer must share it. A node cut
	// off alone hears from no peer.
	return down > 1 && float64(down)/float64(total) > p.maxUnreachable, seen
}

// sample lists up to n of the peers' failures, by node name, for the log.
func sample(failed map[string]string, n int) string {
	nodes := slices.Sorted(maps.Keys(failed))
	var b strings.Builder
	for i, node := range nodes[:min(n, len(nodes))] {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", node, failed[node])
	}
	if len(nodes) > n {
		fmt.Fprintf(&b, " (and %d more)", len(nodes)-n)
	}
	return b.String()
}

// askPeer asks node, at hostport, with cfg (identity.clientConfig): through no proxy, on a
// connection of its own, following no redirect.
func askPeer(ctx context.Context, hostport, node string, cfg *tls.Config) (peerAnswer, error) {
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+hostport+peerPath, nil)
	if err != nil {
		return peerAnswer{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return peerAnswer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return peerAnswer{}, fmt.Errorf("node %s: %s", node, resp.Status)
	}
	return decodeAnswer(resp.Body, node)
}
