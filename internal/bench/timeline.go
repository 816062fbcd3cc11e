package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/launcherpod"
)

// The stages of one Ferry migration, in the order they happen, as the benchmark sees them
// through watches on the operation and the VM's pods (so each is when the change reached
// the apiserver and its watchers, to the millisecond).
const (
	StageSeen        = "vmop status written" // the controller's first status write (it may create the target first)
	StageTargetPod   = "target pod created"  // a launcher pod of the VM other than the source
	StageScheduled   = "target scheduled"    // the target pod's node set
	StageLauncher    = "launcher started"    // its container running
	StageListening   = "QEMU listening"      // its incoming URI published
	StageTransfer    = "transfer start"      // the source asked to migrate
	StageSwitchover  = "switchover"          // the source paused the guest, reported completion or ended
	StageTargetReady = "guest on target"     // the target pod Ready (the guest's heartbeat there)
	StageSourceGone  = "source gone"         // the source pod deleted
	StageDone        = "status written"      // the operation Completed
)

// MigrationStages are the stages a timeline holds, in order.
var MigrationStages = []string{StageSeen, StageTargetPod, StageScheduled, StageLauncher, StageListening, StageTransfer,
	StageSwitchover, StageTargetReady, StageSourceGone, StageDone}

// Timeline is when each stage of one migration was first seen, from the operation's
// creation; a stage not seen is absent.
type Timeline map[string]time.Duration

// String is the stages in the order they were seen, each with its time and the time
// since the stage before.
func (t Timeline) String() string {
	var parts []string
	var prev time.Duration
	for _, st := range t.ordered() {
		d := t[st]
		parts = append(parts, fmt.Sprintf("%s +%d (%d)", st, d.Milliseconds(), (d-prev).Milliseconds()))
		prev = d
	}
	return strings.Join(parts, ", ")
}

// ordered is the stages seen, by time (ties in MigrationStages' order).
func (t Timeline) ordered() []string {
	var out []string
	for _, st := range MigrationStages {
		if _, ok := t[st]; ok {
			out = append(out, st)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return cmp.Compare(t[a], t[b]) })
	return out
}

// timelineWatch follows one migration of vm: the operation named once it is created, and
// the VM's pods.
type timelineWatch struct {
	mu        sync.Mutex
	t0        time.Time
	op        string // the operation's name, once created
	sourcePod string
	target    string
	seen      Timeline
	stop      func()
	done      chan struct{}
}

// watchMigration starts watching the operations of ns and the pods of vm, before the
// operation is created (t0 is set by created). It needs a client that can watch; with
// one that cannot it returns nil, and the sample has no timeline.
func watchMigration(ctx context.Context, c client.Client, ns, vm, sourcePod string) *timelineWatch {
	wc, ok := c.(client.WithWatch)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	ops, err := wc.Watch(ctx, &v1alpha2.VirtualMachineOperationList{}, client.InNamespace(ns))
	if err != nil {
		cancel()
		return nil
	}
	pods, err := wc.Watch(ctx, &corev1.PodList{}, client.InNamespace(ns), client.MatchingLabels{v1alpha2.LabelVMName: vm})
	if err != nil {
		ops.Stop()
		cancel()
		return nil
	}
	w := &timelineWatch{sourcePod: sourcePod, seen: Timeline{}, done: make(chan struct{})}
	w.stop = func() { cancel(); ops.Stop(); pods.Stop() }
	go func() {
		defer close(w.done)
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-ops.ResultChan():
				if !ok {
					return
				}
				if op, isOp := ev.Object.(*v1alpha2.VirtualMachineOperation); isOp {
					w.opEvent(op)
				}
			case ev, ok := <-pods.ResultChan():
				if !ok {
					return
				}
				if p, isPod := ev.Object.(*corev1.Pod); isPod {
					w.podEvent(ev.Type, p)
				}
			}
		}
	}()
	return w
}

// created records the operation the watch follows and the time it was created.
func (w *timelineWatch) created(name string, t0 time.Time) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.op, w.t0 = name, t0
}

// mark records stage st at now, unless seen before (or before the operation exists).
func (w *timelineWatch) mark(st string) {
	if w.t0.IsZero() {
		return
	}
	if _, ok := w.seen[st]; !ok {
		w.seen[st] = time.Since(w.t0)
	}
}

func (w *timelineWatch) opEvent(op *v1alpha2.VirtualMachineOperation) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if op.Name != w.op {
		return
	}
	if op.Status.Phase != "" {
		w.mark(StageSeen)
	}
	if op.Status.Phase == v1alpha2.OpCompleted {
		w.mark(StageDone)
	}
}

func (w *timelineWatch) podEvent(t watch.EventType, p *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t0.IsZero() {
		return
	}
	if p.Name == w.sourcePod {
		if t == watch.Deleted {
			w.mark(StageSourceGone)
			return
		}
		if p.Annotations[v1alpha2.AnnotationMigrateTo] != "" {
			w.mark(StageTransfer)
		}
		var prog v1alpha2.MigrationProgress
		_ = json.Unmarshal([]byte(p.Annotations[v1alpha2.AnnotationMigrationStatus]), &prog)
		if prog.Status == "device" || prog.Status == "completed" || launcherpod.Ended(p) {
			w.mark(StageSwitchover)
		}
		return
	}
	if w.target == "" {
		if t == watch.Deleted || !p.CreationTimestamp.After(w.t0.Add(-time.Second)) {
			return // an earlier pod of the VM, going
		}
		w.target = p.Name
	}
	if p.Name != w.target {
		return
	}
	w.mark(StageTargetPod)
	if p.Spec.NodeName != "" {
		w.mark(StageScheduled)
	}
	if slices.ContainsFunc(p.Status.ContainerStatuses, func(cs corev1.ContainerStatus) bool { return cs.State.Running != nil }) {
		w.mark(StageLauncher)
	}
	if p.Annotations[v1alpha2.AnnotationIncomingURI] != "" {
		w.mark(StageListening)
	}
	if launcherpod.Ready(p) {
		w.mark(StageTargetReady)
	}
}

// finish stops the watch, giving it up to wait for the stages still to come in (the
// source pod's deletion may follow the operation's completion), and returns the timeline.
func (w *timelineWatch) finish(wait time.Duration) Timeline {
	if w == nil {
		return nil
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		_, gone := w.seen[StageSourceGone]
		w.mu.Unlock()
		if gone {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(Timeline, len(w.seen))
	for k, v := range w.seen {
		out[k] = v
	}
	return out
}

// TimelineTable prints, per scenario, the median time of each stage of Ferry's completed
// migrations from the operation's creation, and the median time since the stage before.
func TimelineTable(w io.Writer, results []ScenarioResult) {
	for _, r := range results {
		var tls []Timeline
		for _, s := range r.Ferry.Completed() {
			if len(s.Timeline) > 0 {
				tls = append(tls, s.Timeline)
			}
		}
		if len(tls) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nWhere a Ferry migration's time goes (%s, median of %d, ms from the vmop's creation; step: since the stage before):\n\n", r.Name, len(tls))
		fmt.Fprintf(w, "| Stage | At | Step |\n|---|---|---|\n")
		for _, row := range timelineRows(tls) {
			fmt.Fprintf(w, "| %s | %s | %s |\n", row[0], row[1], row[2])
		}
	}
}

// timelineRows are, by median time, each stage with its median time and the time since
// the row before; a stage no run saw is "-" and last.
func timelineRows(tls []Timeline) [][3]string {
	med := Timeline{}
	var unseen []string
	for _, st := range MigrationStages {
		var at []time.Duration
		for _, tl := range tls {
			if d, ok := tl[st]; ok {
				at = append(at, d)
			}
		}
		if len(at) == 0 {
			unseen = append(unseen, st)
			continue
		}
		med[st] = Summarize(at).Median
	}
	var rows [][3]string
	var prev time.Duration
	for _, st := range med.ordered() {
		rows = append(rows, [3]string{st, Millis(med[st]), Millis(med[st] - prev)})
		prev = med[st]
	}
	for _, st := range unseen {
		rows = append(rows, [3]string{st, "-", "-"})
	}
	return rows
}
