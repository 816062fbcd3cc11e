package simnode

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"

	"github.com/ferryvm/ferry/internal/agent"
)

// Cluster is the simulated nodes of one process and the record of their guests.
type Cluster struct {
	Guests *Guests

	log   logr.Logger
	mu    sync.Mutex
	nodes []*Node
}

// NewCluster returns a cluster without nodes.
func NewCluster(log logr.Logger) *Cluster {
	return &Cluster{Guests: NewGuests(), log: log}
}

// Add adds a node whose agent runs with o against the apiserver of cfg.
func (c *Cluster) Add(name string, cfg *rest.Config, o agent.Options) *Node {
	n := newNode(name, cfg, o, c.log)
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

// Nodes returns the nodes in the order they were added.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Node returns the node of that name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes() {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Serve answers on ln until ctx ends:
//
//	POST /nodes/{node}/{poweroff|poweron|kill-agent}
//	POST /nodes/{node}/{freeze|cut}?for=DURATION
//	POST /launchers/{pod UID}/kill
//	GET  /nodes    the nodes' State
//	GET  /guests   the guests that run now and every overlap seen (GuestReport)
func (c *Cluster) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /nodes/{node}/{action}", func(w http.ResponseWriter, r *http.Request) {
		n := c.Node(r.PathValue("node"))
		if n == nil {
			http.Error(w, "no such node", http.StatusNotFound)
			return
		}
		var d time.Duration
		if s := r.URL.Query().Get("for"); s != "" {
			var err error
			if d, err = time.ParseDuration(s); err != nil || d <= 0 {
				http.Error(w, "for: want a positive duration such as 5s", http.StatusBadRequest)
				return
			}
		}
		var err error
		switch a := r.PathValue("action"); {
		case a == "poweroff":
			n.PowerOff("asked over the control endpoint")
		case a == "poweron":
			n.PowerOn()
		case a == "kill-agent":
			err = n.KillAgent()
		case a == "freeze" && d > 0:
			err = n.Freeze(d)
		case a == "cut" && d > 0:
			n.Cut(d)
		default:
			http.Error(w, "unknown action (or freeze/cut without ?for=)", http.StatusBadRequest)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
		}
	})
	mux.HandleFunc("POST /launchers/{uid}/kill", func(w http.ResponseWriter, r *http.Request) {
		for _, n := range c.Nodes() {
			if n.KillLauncher(r.PathValue("uid")) {
				return
			}
		}
		http.Error(w, "no launcher of that pod runs", http.StatusNotFound)
	})
	mux.HandleFunc("GET /nodes", func(w http.ResponseWriter, _ *http.Request) {
		var out []State
		for _, n := range c.Nodes() {
			out = append(out, n.State())
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /guests", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, c.Guests.Report())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Guests records which simulated guests run. An instance is a launcher's run directory
// (<state dir>/<node>/pods/<pod UID>); it is reported as "<node>/<pod UID>".
type Guests struct {
	mu         sync.Mutex
	running    map[string]map[string]time.Time // VM → instance → running since
	starts     map[string]int                  // VM → times a guest of it started running
	violations []Overlap
}

// Overlap is a VM whose guest ran in two places at once.
type Overlap struct {
	VM string `json:"vm"`
	// At is when the second guest started running; Instances are the guests running then.
	At        time.Time `json:"at"`
	Instances []string  `json:"instances"`
}

// GuestReport is what Guests knows.
type GuestReport struct {
	// Running maps each VM to the guests running now.
	Running map[string][]string `json:"running"`
	// Starts counts the times a guest of each VM started running (a boot, or a resume on
	// a migration target).
	Starts   map[string]int `json:"starts"`
	Overlaps []Overlap      `json:"overlaps"`
}

// NewGuests returns an empty record.
func NewGuests() *Guests {
	return &Guests{running: map[string]map[string]time.Time{}, starts: map[string]int{}}
}

// Observe is launcher.SimOptions.OnGuest.
func (g *Guests) Observe(vm, instance string, running bool) {
	inst := filepath.Base(filepath.Dir(filepath.Dir(instance))) + "/" + filepath.Base(instance)
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.running[vm]
	if !running {
		delete(m, inst)
		return
	}
	if m == nil {
		m = map[string]time.Time{}
		g.running[vm] = m
	}
	if _, already := m[inst]; already {
		return
	}
	m[inst] = now
	g.starts[vm]++
	if len(m) > 1 {
		var all []string
		for i := range m {
			all = append(all, i)
		}
		sort.Strings(all)
		g.violations = append(g.violations, Overlap{VM: vm, At: now, Instances: all})
	}
}

// Report returns a copy of the record.
func (g *Guests) Report() GuestReport {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := GuestReport{Running: map[string][]string{}, Starts: map[string]int{}, Overlaps: slices.Clone(g.violations)}
	for vm, m := range g.running {
		for i := range m {
			r.Running[vm] = append(r.Running[vm], i)
		}
		sort.Strings(r.Running[vm])
	}
	for vm, k := range g.starts {
		r.Starts[vm] = k
	}
	return r
}
