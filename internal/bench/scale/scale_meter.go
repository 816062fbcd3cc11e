package scale

// What the scale benchmark reads from the cluster and from its control plane.

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/bench"
)

// watchVMs starts a cache of the bench's VMs (one watch), so that waiting on thousands of
// them does not list them all every second: that load on the apiserver, not Ferry's, would
// then be what a phase measures.
func watchVMs(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme) (client.Reader, error) {
	sel := labels.SelectorFromSet(labels.Set{bench.LabelBench: bench.BenchMarker})
	c, err := cache.New(cfg, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{&v1alpha2.VirtualMachine{}: {Label: sel}}})
	if err != nil {
		return nil, err
	}
	if _, err := c.GetInformer(ctx, &v1alpha2.VirtualMachine{}); err != nil {
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("the VM watch did not sync")
	}
	return c, nil
}

// scaleMeter reads the cluster and the control plane's own figures.
type scaleMeter struct {
	c          client.Client
	vmCache    client.Reader // the bench's VMs, kept by a watch: polling them costs the apiserver nothing
	cs         *kubernetes.Clientset
	metricsURL string
	say        func(string, ...any)
	kubeconfig string // the cluster's, which its controller was started with

	at       time.Time
	ctlCPU   float64 // seconds
	requests float64
	writes   map[string]float64 // by resource
	recon    map[string]float64 // bucket upper bound → cumulative count
	events   map[string]eventCount
}

// eventCount is an Event's key (who reported it, and why) and its count so far.
type eventCount struct {
	key   string
	count int32
}

// eventCounts are the cluster's Events by UID (nil if they could not be listed).
func (m *scaleMeter) eventCounts() map[string]eventCount {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := m.cs.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	out := make(map[string]eventCount, len(list.Items))
	for _, e := range list.Items {
		who := cmp.Or(e.Source.Component, e.ReportingController, "?")
		out[string(e.UID)] = eventCount{key: who + " " + e.InvolvedObject.Kind + " " + e.Reason, count: max(e.Count, 1)}
	}
	return out
}

// eventsSince are the events reported since before (counted as the apiserver aggregates
// them: a repeat adds to an Event's count), by reporter, object kind and reason.
func eventsSince(before, now map[string]eventCount) map[string]float64 {
	if before == nil || now == nil {
		return nil
	}
	out := map[string]float64{}
	for uid, e := range now {
		if d := e.count - before[uid].count; d > 0 {
			out[e.key] += float64(d)
		}
	}
	return out
}

func (m *scaleMeter) waitNodes(ctx context.Context, n int, timeout time.Duration) error {
	return bench.WaitNodesReady(ctx, m.c, m.say, n, timeout)
}

func (m *scaleMeter) vms(ctx context.Context) ([]v1alpha2.VirtualMachine, error) {
	var l v1alpha2.VirtualMachineList
	err := m.vmCache.List(ctx, &l, client.MatchingLabels{bench.LabelBench: bench.BenchMarker})
	return l.Items, err
}

func (m *scaleMeter) waitVMsRunning(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := time.Now()
	for {
		vms, err := m.vms(ctx)
		running := 0
		if err == nil {
			for _, v := range vms {
				if v.Status.Phase == v1alpha2.MachineRunning {
					running++
				}
			}
		}
		if running >= n {
			return nil
		}
		if time.Since(last) > 30*time.Second {
			m.say("%d of %d VMs Running", running, n)
			last = time.Now()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d VMs Running after %s", running, n, timeout)
		}
		if err := bench.Sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

func (m *scaleMeter) vmsByNode(ctx context.Context) (map[string][]string, error) {
	vms, err := m.vms(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, v := range vms {
		out[v.Status.NodeName] = append(out[v.Status.NodeName], v.Name)
	}
	return out, nil
}

// migrationTimes are the creation → Completed times of the evacuation operations created
// since t (Completed as the operation's condition records it, to the second).
func (m *scaleMeter) migrationTimes(ctx context.Context, since time.Time) ([]time.Duration, error) {
	var ops v1alpha2.VirtualMachineOperationList
	if err := m.c.List(ctx, &ops); err != nil {
		return nil, err
	}
	var out []time.Duration
	for _, op := range ops.Items {
		if op.CreationTimestamp.Time.Before(since.Truncate(time.Second)) || op.Status.Phase != v1alpha2.OpCompleted {
			continue
		}
		end := op.CreationTimestamp.Time
		for _, c := range op.Status.Conditions {
			if c.LastTransitionTime.After(end) {
				end = c.LastTransitionTime.Time
			}
		}
		out = append(out, end.Sub(op.CreationTimestamp.Time))
	}
	return out, nil
}

// waitRestarted waits until every VM in names runs on a node not in failed, and returns
// for each how long after t it was first seen so (polled every 500 ms).
func (m *scaleMeter) waitRestarted(ctx context.Context, names, failed []string, t time.Time, timeout time.Duration) ([]time.Duration, error) {
	seen := map[string]time.Duration{}
	for {
		vms, err := m.vms(ctx)
		if err == nil {
			for _, v := range vms {
				if _, ok := seen[v.Name]; !ok && slices.Contains(names, v.Name) && v.Status.Phase == v1alpha2.MachineRunning && !slices.Contains(failed, v.Status.NodeName) {
					seen[v.Name] = time.Since(t)
				}
			}
		}
		if len(seen) == len(names) {
			var out []time.Duration
			for _, d := range seen {
				out = append(out, d)
			}
			return out, nil
		}
		if time.Since(t) > timeout {
			return nil, fmt.Errorf("%d of %d VMs of the failed nodes Running elsewhere after %s", len(seen), len(names), timeout)
		}
		if err := bench.Sleep(ctx, 500*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// mark records the counters a later report measures from.
func (m *scaleMeter) mark() {
	m.at = time.Now()
	m.ctlCPU, _ = controllerCPU(m.kubeconfig)
	m.requests, m.writes = m.apiRequests()
	m.recon = m.reconcileBuckets()
	m.events = m.eventCounts()
}

// report says what the control plane did since mark over the phase d.
func (m *scaleMeter) report(d time.Duration) string { return m.load().String() }

// ControlPlaneLoad is what the control plane did over a phase of the scale benchmark.
type ControlPlaneLoad struct {
	// CPUPercent is the controller's CPU time over the phase, in % of one core; RSS its
	// resident memory at the end, in bytes.
	CPUPercent float64
	RSS        int64
	// RequestsPerSec is the apiserver's request rate (apiserver_request_total).
	RequestsPerSec float64
	// Reconcile is the VM controller's reconcile time over the phase.
	Reconcile ReconcileTimes
	// Requests and Writes (POST, PUT, PATCH, DELETE; not counting the nodes' Lease
	// renewals) are the apiserver's requests over the phase, from every client; CPUSeconds
	// is the controller's CPU time.
	Requests, Writes, CPUSeconds float64
	// WritesByResource is Writes by resource (and subresource: pods/status).
	WritesByResource map[string]float64
	// Events are the events reported over the phase by reporter, object kind and reason
	// (nil: not known); Events still in the apiserver at the end only.
	Events map[string]float64
}

func (l ControlPlaneLoad) String() string {
	return fmt.Sprintf("controller CPU %.0f%% of a core, RSS %d MiB; apiserver %.0f requests/s; VM reconcile %s",
		l.CPUPercent, l.RSS>>20, l.RequestsPerSec, l.Reconcile)
}

// PerOp is the phase's cost per operation (a VM started, migrated or restarted), n of
// them: the apiserver's requests and writes (every client's: the controller's, the
// agents' and the bench's own watches and reads), the resources most written, and the
// controller's CPU time.
func (l ControlPlaneLoad) PerOp(n int) string {
	if n == 0 {
		return "no operation"
	}
	f := float64(n)
	out := fmt.Sprintf("%.0f API requests, %.0f writes (not counting Lease renewals: %s), %.0f ms controller CPU per VM (%d VMs; %.0f requests, %.0f writes in all)",
		l.Requests/f, l.Writes/f, strings.Join(topOf(l.WritesByResource, 5, f), ", "), 1000*l.CPUSeconds/f, n, l.Requests, l.Writes)
	if len(l.Events) > 0 {
		out += "; events per VM: " + strings.Join(topOf(l.Events, 3, f), ", ")
	}
	return out
}

// topOf is the n largest of counts, each divided by per, largest first.
func topOf(counts map[string]float64, n int, per float64) []string {
	type kv struct {
		k string
		v float64
	}
	var top []kv
	for k, v := range counts {
		top = append(top, kv{k, v})
	}
	slices.SortFunc(top, func(a, b kv) int { return cmp.Or(cmp.Compare(b.v, a.v), cmp.Compare(a.k, b.k)) })
	var out []string
	for i, t := range top {
		if i == n {
			break
		}
		out = append(out, fmt.Sprintf("%s %.1f", t.k, t.v/per))
	}
	return out
}

// settleEvents waits (30 s at most) until no Event was reported for 2 s: a phase's events
// reach the apiserver after it, through each controller's event queue, and counted in the
// next phase they made a drain of 9 VMs look like 120 events per VM (the start's 250 VMs'
// address events).
func (m *scaleMeter) settleEvents() {
	deadline := time.Now().Add(30 * time.Second)
	prev := m.eventCounts()
	for time.Now().Before(deadline) {
		time.Sleep(2 * time.Second)
		now := m.eventCounts()
		if len(eventsSince(prev, now)) == 0 {
			return
		}
		prev = now
	}
}

// load is what the control plane did since mark: the phase, and the events it reported
// (settleEvents) after its end.
func (m *scaleMeter) load() ControlPlaneLoad {
	m.settleEvents()
	el := time.Since(m.at).Seconds()
	cpu, rss := controllerCPU(m.kubeconfig)
	total, writes := m.apiRequests()
	reqs := total - m.requests
	byResource := map[string]float64{}
	var written float64
	for r, v := range writes {
		if d := v - m.writes[r]; d > 0 {
			byResource[r] = d
			written += d
		}
	}
	now := m.reconcileBuckets()
	diff := map[string]float64{}
	for le, v := range now {
		diff[le] = v - m.recon[le]
	}
	return ControlPlaneLoad{CPUPercent: 100 * (cpu - m.ctlCPU) / el, RSS: rss, RequestsPerSec: reqs / el, Reconcile: reconcileTimes(diff),
		Requests: reqs, Writes: written, WritesByResource: byResource, CPUSeconds: cpu - m.ctlCPU,
		Events: eventsSince(m.events, m.eventCounts())}
}

// controllerCPU is the CPU seconds so far (and, second, the RSS in bytes) of the cluster's
// controller: the process whose command line is "controller --kubeconfig KUBECONFIG" (another
// cluster may run beside it).
func controllerCPU(kubeconfig string) (float64, int64) {
	out, err := exec.Command("pgrep", "-f", "controller --kubeconfig "+filepath.Dir(kubeconfig)).Output()
	if err != nil {
		return 0, 0
	}
	pid := strings.Fields(string(out))[0]
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return (ut + st) / 100, rss * int64(os.Getpagesize())
}

var requestLine = regexp.MustCompile(`^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$`)

// writeVerb matches the label of a request that writes.
var writeVerb = regexp.MustCompile(`(^|,)verb="(POST|PUT|PATCH|DELETE|APPLY)"`)

// apiRequests is the apiserver's request count so far, and its writes by resource.
func (m *scaleMeter) apiRequests() (all float64, writes map[string]float64) {
	b, err := m.cs.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		return 0, nil
	}
	return countRequests(string(b))
}

// resourceLabels pick a request's resource and subresource.
var (
	resourceLabel    = regexp.MustCompile(`(^|,)resource="([^"]*)"`)
	subresourceLabel = regexp.MustCompile(`(^|,)subresource="([^"]+)"`)
)

// countRequests sums apiserver_request_total in a metrics text, and its writes by
// resource ("pods", "pods/status"), less the nodes' Lease renewals.
func countRequests(metrics string) (all float64, writes map[string]float64) {
	writes = map[string]float64{}
	s := bufio.NewScanner(strings.NewReader(metrics))
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		mm := requestLine.FindStringSubmatch(s.Text())
		if mm == nil {
			continue
		}
		v, _ := strconv.ParseFloat(mm[2], 64)
		all += v
		if !writeVerb.MatchString(mm[1]) {
			continue
		}
		r := ""
		if rm := resourceLabel.FindStringSubmatch(mm[1]); rm != nil {
			r = rm[2]
		}
		if sm := subresourceLabel.FindStringSubmatch(mm[1]); sm != nil {
			r += "/" + sm[2]
		}
		// Lease renewals are the nodes' heartbeats, whatever the cluster does.
		if r != "leases" {
			writes[r] += v
		}
	}
	return all, writes
}

var reconcileLine = regexp.MustCompile(`^controller_runtime_reconcile_time_seconds_bucket\{controller="virtualmachine",le="([^"]+)"\} ([0-9.e+]+)$`)

// reconcileBuckets reads the VM controller's reconcile time histogram (cumulative).
func (m *scaleMeter) reconcileBuckets() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(m.metricsURL)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if mm := reconcileLine.FindStringSubmatch(s.Text()); mm != nil {
			v, _ := strconv.ParseFloat(mm[2], 64)
			out[mm[1]] = v
		}
	}
	return out
}

// quantiles reads p50 and p99 (bucket upper bounds) from a cumulative histogram.
func quantiles(b map[string]float64) string { return reconcileTimes(b).String() }

// ReconcileTimes are the p50 and p99 of a reconcile time histogram, as the upper bounds of
// the buckets they fall in, and the number of reconciles (0: none, or no histogram).
type ReconcileTimes struct {
	N        int64
	P50, P99 BucketBound
}

func (r ReconcileTimes) String() string {
	if r.N == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s, p99 %s (%d reconciles)", r.P50, r.P99, r.N)
}

// BucketBound is the upper bound of the histogram bucket a quantile falls in: Le, or above
// the largest finite bound (Inf). OK is false when no bucket held it.
type BucketBound struct {
	Le      time.Duration
	Inf, OK bool
}

func (b BucketBound) String() string {
	switch {
	case !b.OK:
		return "-"
	case b.Inf:
		return "> largest bucket"
	}
	return "≤ " + b.Le.String()
}

// reconcileTimes reads p50 and p99 from a cumulative histogram (bucket upper bound in
// seconds → count).
func reconcileTimes(b map[string]float64) ReconcileTimes {
	type bk struct {
		le float64
		n  float64
	}
	var bs []bk
	total := 0.0
	for le, n := range b {
		v, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			v, err = math.Inf(1), nil
		}
		if err != nil {
			continue
		}
		bs = append(bs, bk{v, n})
		if math.IsInf(v, 1) {
			total = n
		}
	}
	if total == 0 {
		return ReconcileTimes{}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	q := func(f float64) BucketBound {
		for _, x := range bs {
			if x.n >= f*total {
				if math.IsInf(x.le, 1) {
					return BucketBound{Inf: true, OK: true}
				}
				return BucketBound{Le: time.Duration(x.le * float64(time.Second)), OK: true}
			}
		}
		return BucketBound{}
	}
	return ReconcileTimes{N: int64(total), P50: q(0.5), P99: q(0.99)}
}
