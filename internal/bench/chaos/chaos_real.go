package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryvm/ferry/internal/bench"
)

func clientKey(ns, name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }

// realDriver injects faults into `ferry up`'s real nodes (processes, network namespaces,
// QEMU) and watches the guests' serial logs.
type realDriver struct {
	bin, stateDir, ns string
	up                *bench.UpProcess

	mu      sync.Mutex
	watches map[string]*bench.InstanceWatch // VM name → its serial logs since the last overlaps call
	cancel  context.CancelFunc
	done    chan struct{}
}

// startWatching polls every VM's serial logs until stop.
func (d *realDriver) startWatching(ctx context.Context) {
	ctx, d.cancel = context.WithCancel(ctx)
	d.done = make(chan struct{})
	d.resetWatches()
	go func() {
		defer close(d.done)
		for ctx.Err() == nil {
			now := time.Now()
			d.mu.Lock()
			ws := make([]*bench.InstanceWatch, 0, len(d.watches))
			for _, w := range d.watches {
				ws = append(ws, w)
			}
			d.mu.Unlock()
			for _, w := range ws {
				w.Poll(now)
			}
			_ = bench.Sleep(ctx, 200*time.Millisecond)
		}
	}()
}

func (d *realDriver) stop() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
}

func (d *realDriver) resetWatches() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name := range d.watches {
		d.watches[name] = bench.NewInstanceWatch(d.stateDir, d.ns, name)
	}
}

func (d *realDriver) powerOff(ctx context.Context, n string) error {
	return bench.FerryNode(ctx, d.bin, d.stateDir, "poweroff", n)
}
func (d *realDriver) powerOn(ctx context.Context, n string) error {
	return bench.FerryNode(ctx, d.bin, d.stateDir, "poweron", n)
}

// killAgent kills the node's agent with SIGKILL; ferry up starts it again. Its launchers
// run on under the node's stand-in kubelet, as they do on a real cluster when the agent's
// pod dies (the pattern matches the agent, not the stand-in's `agent --role=kubelet`).
func (d *realDriver) killAgent(_ context.Context, n string) error {
	marker := "agent --kubeconfig " + filepath.Join(d.stateDir, "control-plane", "admin.kubeconfig") + " --node-name " + n + " "
	if out, err := exec.Command("pkill", "-KILL", "-f", marker).CombinedOutput(); err != nil {
		return fmt.Errorf("pkill %q: %v %s", marker, err, out)
	}
	return nil
}

func (d *realDriver) freeze(ctx context.Context, n string, t time.Duration) error {
	if err := bench.FerryNode(ctx, d.bin, d.stateDir, "freeze", n); err != nil {
		return err
	}
	time.AfterFunc(t, func() { _ = bench.FerryNode(context.Background(), d.bin, d.stateDir, "thaw", n) })
	return nil
}

func (d *realDriver) cut(ctx context.Context, n string, t time.Duration) error {
	if err := bench.FerryNode(ctx, d.bin, d.stateDir, "disconnect", n); err != nil {
		return err
	}
	time.AfterFunc(t, func() { _ = bench.FerryNode(context.Background(), d.bin, d.stateDir, "connect", n) })
	return nil
}

// killLauncher kills the pod's launcher and its QEMU (its process group) with SIGKILL: the
// process whose working directory is the pod's run directory.
func (d *realDriver) killLauncher(_ context.Context, p *corev1.Pod) error {
	runDir := filepath.Join(d.stateDir, "nodes", p.Spec.NodeName, "pods", string(p.UID))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && cwd == runDir {
			pgid, err := syscall.Getpgid(pid)
			if err != nil {
				continue
			}
			return syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
	return fmt.Errorf("no process runs in %s", runDir)
}

func (d *realDriver) restartController(context.Context) error { return killController(d.stateDir) }
func (d *realDriver) restartAPIServer(context.Context) error  { return restartUpAPIServer(d.up) }

// running counts each VM's QEMU processes.
func (d *realDriver) running(context.Context) (map[string]int, error) {
	out := map[string]int{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name := range d.watches {
		out[d.ns+"/"+name] = bench.QEMUCount(d.ns, name)
	}
	return out, nil
}

// minOverlap is how long two instances of a VM must both have counted (new CNT lines on
// their serial consoles, polled every 200 ms, printed every second) to be reported: a
// migration's handover may show the source's last line and the target's first in one poll.
const minOverlap = 1500 * time.Millisecond

// overlaps reports the VMs two of whose instances counted at once for minOverlap or more
// since the last call, and starts watching anew.
func (d *realDriver) overlaps(context.Context) ([]string, error) {
	d.mu.Lock()
	var out []string
	for name, w := range d.watches {
		spans := w.Spans()
		for i := range spans {
			for j := i + 1; j < len(spans); j++ {
				a, b := spans[i], spans[j]
				if a.First.IsZero() || b.First.IsZero() {
					continue
				}
				from, to := later(a.First, b.First), earlier(a.Last, b.Last)
				if to.Sub(from) >= minOverlap {
					out = append(out, fmt.Sprintf("%s: %s on %s (CNT %s–%s) and %s on %s (CNT %s–%s)", name,
						filepath.Base(a.Dir), a.Node, bench.Clock(a.First), bench.Clock(a.Last), filepath.Base(b.Dir), b.Node, bench.Clock(b.First), bench.Clock(b.Last)))
				}
			}
		}
	}
	d.mu.Unlock()
	d.resetWatches()
	return out, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Real nodes arm a 5 s watchdog (Fast); guests migrate in seconds under TCG.
func (d *realDriver) faultTimes() (time.Duration, time.Duration) {
	return 12 * time.Second, 8 * time.Second
}
