package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultPeerPort is where agents answer each other about their contact with the control
// plane.
const DefaultPeerPort = 10270

// peerPath is the agents' question to each other: can you reach the control plane?
const peerPath = "/fencing/v1/control-plane"

// peerAnswer is an agent's answer: whether its Lease renewals still succeed.
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
type peers struct {
	self string
	port int
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
// and go rarely, and an outage needs the addresses read before it.
func (p *peers) keepFresh(ctx context.Context, c client.Reader, every time.Duration, log logr.Logger) {
	for {
		if err := p.refresh(ctx, c); err != nil && ctx.Err() == nil {
			log.Error(err, "Could not read the peers' addresses")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// serve answers peers on addr until ctx ends.
func (p *peers) serve(ctx context.Context, addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+peerPath, func(w http.ResponseWriter, _ *http.Request) {
		if p.down != nil && p.down() {
			panic(http.ErrAbortHandler) // no answer: the connection just drops
		}
		ok, last := p.reachable()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(peerAnswer{Node: p.self, Reachable: ok, LastRenew: last})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("peer endpoint: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// outage asks every peer at once (each within timeout) and tells whether the control plane
// is unreachable from more than maxUnreachable of all nodes, counting this one, which
// cannot reach it, and from at least one peer. It also says what it saw, for the log.
func (p *peers) outage(ctx context.Context, timeout time.Duration) (bool, string) {
	if p.down != nil && p.down() {
		return false, "the node's network is down: no peer can be asked"
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
	var wg sync.WaitGroup
	for _, addr := range addrs {
		wg.Go(func() {
			a, err := askPeer(ctx, net.JoinHostPort(addr, strconv.Itoa(p.port)))
			if err != nil {
				return
			}
			mu.Lock()
			answered++
			if !a.Reachable {
				down++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	seen := fmt.Sprintf("%d of %d nodes cannot reach the control plane (%d of %d peers answered)", down, total, answered, total-1)
	// This node's own trouble proves nothing: at least one peer must share it. A node cut
	// off alone hears from no peer.
	return down > 1 && float64(down)/float64(total) > p.maxUnreachable, seen
}

func askPeer(ctx context.Context, hostport string) (peerAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostport+peerPath, nil)
	if err != nil {
		return peerAnswer{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return peerAnswer{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return peerAnswer{}, fmt.Errorf("peer %s: %s", hostport, resp.Status)
	}
	var a peerAnswer
	err = json.NewDecoder(resp.Body).Decode(&a)
	return a, err
}
