package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// The failover benchmark watches the VM from outside the cluster, as its owner would: the
// QEMU processes on the machine and the guests' serial logs, every WatchInterval.
const WatchInterval = 100 * time.Millisecond

// QEMUCount counts the live QEMU processes of the VM ns/name: those whose command line
// has `-name guest=ns/name` (what `pgrep -af qemu-system` shows), read from /proc.
func QEMUCount(ns, name string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := []byte("guest=" + ns + "/" + name)
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		// A zombie (killed, not yet reaped) has an empty command line.
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := bytes.Split(bytes.TrimRight(raw, "\x00"), []byte{0})
		if !strings.Contains(filepath.Base(string(args[0])), "qemu-system") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if string(args[i]) == "-name" && bytes.Equal(args[i+1], want) {
				n++
				break
			}
		}
	}
	return n
}

// InstanceSpan is when one instance of the VM (one launcher run directory) was seen
// counting: the first and the last new CNT line after the watch began. First is zero when
// it printed none meanwhile.
type InstanceSpan struct {
	Dir, Node   string
	First, Last time.Time
}

// Overlaps names the pairs of spans whose heartbeats overlapped: each one counted while the
// other did. An instance that printed one line during the other's span overlaps it too.
func Overlaps(spans []InstanceSpan) []string {
	var out []string
	for i := range spans {
		for j := i + 1; j < len(spans); j++ {
			a, b := spans[i], spans[j]
			if a.First.IsZero() || b.First.IsZero() {
				continue
			}
			if !a.First.After(b.Last) && !b.First.After(a.Last) {
				out = append(out, fmt.Sprintf("%s on %s (CNT %s–%s) and %s on %s (CNT %s–%s)",
					filepath.Base(a.Dir), a.Node, Clock(a.First), Clock(a.Last), filepath.Base(b.Dir), b.Node, Clock(b.First), Clock(b.Last)))
			}
		}
	}
	return out
}

func Clock(t time.Time) string { return t.Format("15:04:05.0") }

// InstanceWatch follows the serial logs of every instance of one VM under a `ferry up`
// state directory (STATE/nodes/NODE/pods/POD-UID/, whose launcher.log says
// "VM ns/name: qemu pid") and notes when each printed new CNT lines.
type InstanceWatch struct {
	stateDir string
	vmLine   string

	mu      sync.Mutex
	started bool
	byDir   map[string]*instance
}

type instance struct {
	span     InstanceSpan
	follower *hypervisor.SerialFollower
	// ours: launcher.log names the VM; other: it names another VM.
	ours, other bool
	lastN       int64
	hadN        bool
}

func NewInstanceWatch(stateDir, ns, name string) *InstanceWatch {
	return &InstanceWatch{stateDir: stateDir, vmLine: "VM " + ns + "/" + name + ": qemu pid", byDir: map[string]*instance{}}
}

// Poll looks for new run directories and reads what each log gained. What the logs held at
// the first poll is the baseline, not counting: only CNT lines printed while watching mark
// an instance as counting.
func (w *InstanceWatch) Poll(now time.Time) {
	dirs, _ := filepath.Glob(filepath.Join(w.stateDir, "nodes", "*", "pods", "*"))
	w.mu.Lock()
	defer w.mu.Unlock()
	baseline := !w.started
	w.started = true
	for _, dir := range dirs {
		in := w.byDir[dir]
		if in == nil {
			node := filepath.Base(filepath.Dir(filepath.Dir(dir)))
			in = &instance{span: InstanceSpan{Dir: dir, Node: node}, follower: hypervisor.NewSerialFollower(filepath.Join(dir, hypervisor.SerialLogName))}
			w.byDir[dir] = in
		}
		if in.other {
			continue
		}
		if !in.ours {
			b, _ := os.ReadFile(filepath.Join(dir, "launcher.log"))
			switch {
			case bytes.Contains(b, []byte(w.vmLine)):
				in.ours = true
			case bytes.Contains(b, []byte(": qemu pid ")):
				in.other = true
				continue
			}
		}
		_ = in.follower.Poll()
		n, _, ok := in.follower.Heartbeat()
		if !ok || (in.hadN && n == in.lastN) {
			continue
		}
		in.lastN, in.hadN = n, true
		if baseline {
			continue
		}
		if in.span.First.IsZero() {
			in.span.First = now
		}
		in.span.Last = now
	}
}

// Spans returns the VM's instances (those whose launcher.log names it), sorted by directory.
func (w *InstanceWatch) Spans() []InstanceSpan {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []InstanceSpan
	for _, in := range w.byDir {
		if in.ours {
			out = append(out, in.span)
		}
	}
	slices.SortFunc(out, func(a, b InstanceSpan) int { return strings.Compare(a.Dir, b.Dir) })
	return out
}

// Span returns the instance of run directory dir.
func (w *InstanceWatch) Span(dir string) (InstanceSpan, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	in := w.byDir[filepath.Clean(dir)]
	if in == nil {
		return InstanceSpan{}, false
	}
	return in.span, true
}

// ProcessWatch counts, every WatchInterval, the QEMU processes of the VM.
type ProcessWatch struct {
	mu              sync.Mutex
	samples, double int
	most            int
}

func (p *ProcessWatch) Sample(ns, name string) {
	n := QEMUCount(ns, name)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.samples++
	if n > 1 {
		p.double++
	}
	p.most = max(p.most, n)
}

func (p *ProcessWatch) Counts() (samples, double, most int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.samples, p.double, p.most
}
