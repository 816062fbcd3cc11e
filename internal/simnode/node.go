package simnode

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"

	"github.com/ferryvm/ferry/internal/agent"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/watchdog"
)

// RestartDelay is how long a killed agent stays down before its supervisor (systemd, the
// DaemonSet) starts it again, and how long a reset or powered-on node takes to boot.
const RestartDelay = time.Second

// Node is one simulated node.
type Node struct {
	Name, IP string
	// Runtime runs the node's launcher pods; set it before Live.
	Runtime kubelet.Runtime
	// BrokenWatchdog makes the watchdog never fire (set before Live): a node cut off keeps
	// running its VMs while the cluster believes it reset. Only to prove that a chaos run
	// notices a VM running twice.
	BrokenWatchdog bool
	// KubeletConfig, when set (before Live), splits the node's agent in two, as on a real
	// cluster: a stand-in kubelet (kubelet.RoleKubelet) on these credentials runs the
	// launcher pods, and the agent proper (kubelet.RoleHandler) on the node's own handles
	// fencing and the VMs. Both die with the node.
	KubeletConfig *rest.Config

	cfg *rest.Config
	o   agent.Options
	log logr.Logger
	// wd is the node's watchdog: armed by the agent, it keeps counting when the agent dies.
	wd watchdog.Fake

	mu     sync.Mutex
	off    bool          // powered off
	wake   chan struct{} // closed by PowerOn
	cut    bool          // network link down
	frozen bool
	thaw   chan struct{} // closed when the agent thaws
	cur    *boot         // the running agent, nil between boots
	resets int
	kills  map[string]func() // launcher id (pod UID) → kill it
}

// boot is one run of the node's agent, from start to death.
type boot struct {
	dead      atomic.Bool
	gone      chan struct{} // closed at death
	once      sync.Once
	killVMs   context.CancelFunc
	stopAgent context.CancelFunc
	vmCtx     context.Context
}

// die ends the agent at once, without its graceful stop (no disarm, no last writes), and
// the VMs with it (its launchers die with it, as Pdeathsig makes them).
func (b *boot) die() {
	b.once.Do(func() {
		b.dead.Store(true)
		close(b.gone)
		b.killVMs()
		b.stopAgent()
	})
}

func newNode(name string, cfg *rest.Config, o agent.Options, log logr.Logger) *Node {
	return &Node{Name: name, IP: o.NodeIP, cfg: cfg, o: o, log: log.WithValues("node", name), wake: make(chan struct{}), kills: map[string]func(){}}
}

// Live runs the node until ctx ends: boots it, and boots it again after its agent was
// killed or its watchdog reset it; a powered-off node waits for PowerOn.
func (n *Node) Live(ctx context.Context) {
	for ctx.Err() == nil {
		n.mu.Lock()
		off, wake := n.off, n.wake
		n.mu.Unlock()
		if off {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			continue
		}
		n.run(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(RestartDelay):
		}
	}
}

// run runs the agent once, until it dies or ctx ends.
func (n *Node) run(ctx context.Context) {
	b := &boot{gone: make(chan struct{})}
	var actx context.Context
	b.vmCtx, b.killVMs = context.WithCancel(ctx)
	actx, b.stopAgent = context.WithCancel(ctx)
	n.mu.Lock()
	if n.off {
		n.mu.Unlock()
		return
	}
	n.cur, n.frozen = b, false // a new process is not frozen
	n.mu.Unlock()

	cfg := rest.CopyConfig(n.cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &transport{rt: rt, n: n, b: b} })
	o := n.o
	o.Runtime = n.Runtime
	o.WatchdogDevice = &bootWatchdog{wd: &n.wd, b: b}
	o.NetworkDown = func() bool { return n.networkDown(b) }
	o.Log = n.log

	// The watchdog fires when the node has not fed it in time: the node resets.
	wdDone := make(chan struct{})
	go func() {
		defer close(wdDone)
		for {
			select {
			case <-b.gone:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if !n.BrokenWatchdog && n.wd.Expired(time.Now()) {
				n.reset(b)
				return
			}
		}
	}()
	if n.KubeletConfig == nil {
		err := agent.Run(actx, cfg, o)
		if err != nil && ctx.Err() == nil && !b.dead.Load() {
			n.log.Error(err, "Simulated agent stopped")
		}
	} else {
		kcfg := rest.CopyConfig(n.KubeletConfig)
		kcfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &transport{rt: rt, n: n, b: b} })
		ko := n.o
		ko.Role, ko.Runtime, ko.PeerPort, ko.Log = kubelet.RoleKubelet, n.Runtime, 0, n.log.WithName("kubelet")
		o.Role, o.Runtime = kubelet.RoleHandler, nil
		var wg sync.WaitGroup
		for _, part := range []struct {
			cfg *rest.Config
			o   agent.Options
		}{{kcfg, ko}, {cfg, o}} {
			wg.Go(func() {
				err := agent.Run(actx, part.cfg, part.o)
				if err != nil && ctx.Err() == nil && !b.dead.Load() {
					n.log.Error(err, "Simulated agent stopped", "role", part.o.Role)
				}
				// One part gone is the node's agent gone: the other goes too.
				b.stopAgent()
			})
		}
		wg.Wait()
	}
	// Whatever ended the agent, its launchers go with it.
	b.once.Do(func() { b.dead.Store(true); close(b.gone); b.killVMs() })
	<-wdDone
	n.mu.Lock()
	if n.cur == b {
		n.cur = nil
	}
	n.mu.Unlock()
}

// reset is the watchdog firing: the node restarts, its VMs die, and the agent finds the
// reset marker at boot (as the real watchdog process leaves it).
func (n *Node) reset(b *boot) {
	n.log.Info("Simulated watchdog expired: the node resets")
	marker := filepath.Join(n.o.StateDir, agent.ResetMarker)
	_ = os.MkdirAll(n.o.StateDir, 0o755)
	_ = os.WriteFile(marker, []byte("simulated watchdog expired at "+time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o644)
	b.die()
	_ = n.wd.Disarm() // a rebooted machine's watchdog starts disarmed
	n.mu.Lock()
	n.resets++
	n.mu.Unlock()
}

// VMContext ends when the node's current agent dies (or the node loses power): launchers
// started from it run under it.
func (n *Node) VMContext() context.Context {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cur == nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return ctx
	}
	return n.cur.vmCtx
}

// AddLauncher registers a launcher's kill function under its id (the pod UID).
func (n *Node) AddLauncher(id string, kill func()) {
	n.mu.Lock()
	n.kills[id] = kill
	n.mu.Unlock()
}

// RemoveLauncher forgets a launcher that ended.
func (n *Node) RemoveLauncher(id string) {
	n.mu.Lock()
	delete(n.kills, id)
	n.mu.Unlock()
}

// PowerOff cuts the node's power: agent and VMs die at once, the watchdog with them; the
// node stays down until PowerOn.
func (n *Node) PowerOff(why string) {
	n.mu.Lock()
	if n.off {
		n.mu.Unlock()
		return
	}
	n.off, n.wake = true, make(chan struct{})
	b := n.cur
	n.mu.Unlock()
	n.log.Info("Simulated node powered off", "why", why)
	if b != nil {
		b.die()
	}
	_ = n.wd.Disarm()
}

// PowerOn boots a powered-off node.
func (n *Node) PowerOn() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.off {
		n.off = false
		close(n.wake)
	}
}

// KillAgent kills the agent process: its launchers die with it (Pdeathsig), its watchdog
// keeps counting, and the agent starts again after RestartDelay.
func (n *Node) KillAgent() error {
	n.mu.Lock()
	b := n.cur
	n.mu.Unlock()
	if b == nil {
		return errors.New("no agent runs on " + n.Name)
	}
	n.log.Info("Simulated agent killed")
	b.die()
	return nil
}

// Freeze stops the agent process for d (SIGSTOP, then SIGCONT): it makes no request and
// answers no peer; its VMs run on. A freeze longer than the watchdog's timeout resets
// the node.
func (n *Node) Freeze(d time.Duration) error {
	n.mu.Lock()
	b := n.cur
	if b == nil || n.frozen {
		n.mu.Unlock()
		return errors.New("no running agent to freeze on " + n.Name)
	}
	n.frozen = true
	thaw := make(chan struct{})
	n.thaw = thaw
	n.mu.Unlock()
	n.log.Info("Simulated agent frozen", "for", d)
	time.AfterFunc(d, func() {
		n.mu.Lock()
		if n.thaw == thaw {
			n.frozen = false
		}
		n.mu.Unlock()
		close(thaw)
	})
	return nil
}

// Cut takes the node's network link down for d: the agent's requests fail and no peer
// reaches it; its VMs run on. A cut longer than the watchdog's timeout resets the node.
func (n *Node) Cut(d time.Duration) {
	n.mu.Lock()
	n.cut = true
	n.mu.Unlock()
	n.log.Info("Simulated network cut", "for", d)
	time.AfterFunc(d, func() {
		n.mu.Lock()
		n.cut = false
		n.mu.Unlock()
	})
}

// KillLauncher kills the launcher of the pod with this UID; false if none runs here.
func (n *Node) KillLauncher(uid string) bool {
	n.mu.Lock()
	kill := n.kills[uid]
	n.mu.Unlock()
	if kill == nil {
		return false
	}
	n.log.Info("Simulated launcher killed", "pod", uid)
	kill()
	return true
}

// State is what the node's hardware is doing.
type State struct {
	Name   string `json:"name"`
	IP     string `json:"ip"`
	Off    bool   `json:"off"`
	Cut    bool   `json:"cut"`
	Frozen bool   `json:"frozen"`
	Agent  bool   `json:"agentRunning"`
	Resets int    `json:"watchdogResets"`
	Armed  bool   `json:"watchdogArmed"`
	VMs    int    `json:"launchers"`
}

// State reports the node's state.
func (n *Node) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	return State{Name: n.Name, IP: n.IP, Off: n.off, Cut: n.cut, Frozen: n.frozen, Agent: n.cur != nil,
		Resets: n.resets, Armed: n.wd.Armed(), VMs: len(n.kills)}
}

// networkDown tells the agent's peer endpoint whether it can talk: not while the link is
// cut or the process frozen or dead.
func (n *Node) networkDown(b *boot) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut || n.frozen || b.dead.Load()
}

// gate blocks while the agent is frozen and fails once the link is cut or the agent is
// dead: every request and every read of a response (watches too) passes it.
func (n *Node) gate(ctx context.Context, b *boot) error {
	for {
		if b.dead.Load() {
			return errors.New("simulated: the agent process is gone")
		}
		n.mu.Lock()
		cut, frozen, thaw := n.cut, n.frozen, n.thaw
		n.mu.Unlock()
		if cut {
			return errors.New("simulated: the node's network is cut")
		}
		if !frozen {
			return nil
		}
		select {
		case <-thaw:
		case <-b.gone:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// transport is the agent's link to the apiserver.
type transport struct {
	rt http.RoundTripper
	n  *Node
	b  *boot
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := t.n.gate(r.Context(), t.b); err != nil {
		return nil, err
	}
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &gatedBody{ReadCloser: resp.Body, ctx: r.Context(), n: t.n, b: t.b}
	return resp, nil
}

// gatedBody cuts a response (a watch's above all) when the link goes down.
type gatedBody struct {
	io.ReadCloser
	ctx context.Context
	n   *Node
	b   *boot
}

func (g *gatedBody) Read(p []byte) (int, error) {
	if err := g.n.gate(g.ctx, g.b); err != nil {
		return 0, err
	}
	k, err := g.ReadCloser.Read(p)
	if err == nil {
		if gerr := g.n.gate(g.ctx, g.b); gerr != nil {
			return 0, gerr
		}
	}
	return k, err
}

// bootWatchdog is the watchdog as one run of the agent sees it: a dead agent calls it no
// more (its shutdown's disarm never happens).
type bootWatchdog struct {
	wd *watchdog.Fake
	b  *boot
}

func (w *bootWatchdog) Arm(timeout time.Duration) error {
	if w.b.dead.Load() {
		return errors.New("simulated: the agent process is gone")
	}
	return w.wd.Arm(timeout)
}

func (w *bootWatchdog) Feed() error {
	if w.b.dead.Load() {
		return errors.New("simulated: the agent process is gone")
	}
	return w.wd.Feed()
}

func (w *bootWatchdog) Disarm() error {
	if w.b.dead.Load() {
		return errors.New("simulated: the agent process is gone")
	}
	return w.wd.Disarm()
}
