package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/ferryvm/ferry/internal/pinger"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Names of what the benchmark creates in the cluster.
const (
	ImageName   = "ferry-guest"
	LabelBench  = "app.kubernetes.io/managed-by"
	BenchMarker = "ferry-bench"
)

// PostMigrationWindow is how long a guest may take to count on after a migration.
const PostMigrationWindow = 10 * time.Second

func NewClient(kubeconfig string) (client.WithWatch, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha2.AddToScheme(s); err != nil {
		return nil, err
	}
	return client.NewWithWatch(cfg, client.Options{Scheme: s})
}

// FerryVM drives Evict operations of one benchmark VM.
type FerryVM struct {
	C        client.Client
	NS, VM   string
	Disk     string
	LogsDir  string // the cluster's logs, when known
	Timeout  time.Duration
	Say      func(string, ...any)
	ImageURL string
	// Params is the migration request Ferry's controller sent to a source node.
	Params *v1alpha2.MigrationRequest
	// TargetNode, when set, makes Migrate create Migrate operations to that node
	// (spec.migrate.nodeSelector kubernetes.io/hostname) instead of Evict operations.
	TargetNode string
	// NoPing: no pinger (migration.Options.NoPing).
	NoPing bool
}

// newOperation is the operation Migrate creates: Evict, or Migrate to b.TargetNode.
func (b *FerryVM) newOperation() *v1alpha2.VirtualMachineOperation {
	op := &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{GenerateName: b.VM + "-evict-", Namespace: b.NS, Labels: b.labels()},
		Spec:       v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: b.VM},
	}
	if b.TargetNode != "" {
		op.GenerateName = b.VM + "-migrate-"
		op.Spec.Type = v1alpha2.OpMigrate
		op.Spec.Migrate = &v1alpha2.MigrateSpec{NodeSelector: map[string]string{corev1.LabelHostname: b.TargetNode}}
	}
	return op
}

func (b *FerryVM) labels() map[string]string { return map[string]string{LabelBench: BenchMarker} }

// Sleep waits d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// EnsureImage creates the ClusterVirtualImage ferry-guest from ImageURL unless it exists,
// and waits until it is Ready.
func (b *FerryVM) EnsureImage(ctx context.Context) error {
	img := &v1alpha2.ClusterVirtualImage{}
	err := b.C.Get(ctx, client.ObjectKey{Name: ImageName}, img)
	if apierrors.IsNotFound(err) {
		b.Say("Creating ClusterVirtualImage %s from %s", ImageName, b.ImageURL)
		img = &v1alpha2.ClusterVirtualImage{
			ObjectMeta: metav1.ObjectMeta{Name: ImageName, Labels: b.labels()},
			Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{
				Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: b.ImageURL},
			}},
		}
		err = b.C.Create(ctx, img)
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("ClusterVirtualImage %s: %w", ImageName, err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if err := b.C.Get(ctx, client.ObjectKey{Name: ImageName}, img); err == nil {
			switch img.Status.Phase {
			case v1alpha2.ImageReady:
				return nil
			case v1alpha2.ImageFailed:
				return fmt.Errorf("ClusterVirtualImage %s failed: %+v", ImageName, img.Status.Conditions)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ClusterVirtualImage %s not Ready within 3m (phase %q)", ImageName, img.Status.Phase)
		}
		if err := Sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// CreateVM makes the benchmark VM (1 core, the given runPolicy) and its disk, after
// removing leftovers of an earlier run.
func (b *FerryVM) CreateVM(ctx context.Context, memory resource.Quantity, policy v1alpha2.RunPolicy) error {
	if err := b.DeleteVM(ctx); err != nil {
		return err
	}
	disk := &v1alpha2.VirtualDisk{
		ObjectMeta: metav1.ObjectMeta{Name: b.Disk, Namespace: b.NS, Labels: b.labels()},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
			ObjectRef: &v1alpha2.ObjectRefSource{Kind: "ClusterVirtualImage", Name: ImageName}}},
	}
	vm := &v1alpha2.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: b.VM, Namespace: b.NS, Labels: b.labels()},
		Spec: v1alpha2.VirtualMachineSpec{
			RunPolicy:           policy,
			LiveMigrationPolicy: v1alpha2.PreferSafe,
			CPU:                 v1alpha2.CPUSpec{Cores: 1},
			Memory:              v1alpha2.MemorySpec{Size: memory},
			BlockDeviceRefs:     []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: b.Disk}},
		},
	}
	if err := b.C.Create(ctx, disk); err != nil {
		return fmt.Errorf("creating VirtualDisk %s: %w", b.Disk, err)
	}
	if err := b.C.Create(ctx, vm); err != nil {
		return fmt.Errorf("creating VirtualMachine %s: %w", b.VM, err)
	}
	return nil
}

// DeleteVM deletes the benchmark's operations, VM and disk and waits until they are gone.
func (b *FerryVM) DeleteVM(ctx context.Context) error {
	var ops v1alpha2.VirtualMachineOperationList
	if err := b.C.List(ctx, &ops, client.InNamespace(b.NS), client.MatchingLabels(b.labels())); err == nil {
		for i := range ops.Items {
			_ = client.IgnoreNotFound(b.C.Delete(ctx, &ops.Items[i]))
		}
	}
	objs := []client.Object{
		&v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: b.VM, Namespace: b.NS}},
		&v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: b.Disk, Namespace: b.NS}},
	}
	for _, o := range objs {
		if err := b.C.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting %s: %w", o.GetName(), err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, o := range objs {
		for {
			err := b.C.Get(ctx, client.ObjectKeyFromObject(o), o)
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s %s still there 2m after its deletion", o.GetObjectKind().GroupVersionKind().Kind, o.GetName())
			}
			if err := Sleep(ctx, 250*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// Placement is where the VM runs.
type Placement struct {
	Pod, Node, RunDir string
}

// WaitReady waits until the VM is Running with an active launcher pod whose guest counts.
func (b *FerryVM) WaitReady(ctx context.Context, timeout time.Duration) (Placement, error) {
	deadline := time.Now().Add(timeout)
	last := "nothing yet"
	for {
		if p, why := b.Ready(ctx); why == "" {
			return p, nil
		} else {
			last = why
		}
		if time.Now().After(deadline) {
			return Placement{}, fmt.Errorf("VM %s not running with a heartbeat within %s: %s", b.VM, timeout, last)
		}
		// No node has room (e.g. more VMs than one node's CPUs): waiting does not help.
		if strings.Contains(last, v1alpha2.ReasonUnschedulable) && time.Until(deadline) < timeout-30*time.Second {
			return Placement{}, fmt.Errorf("VM %s cannot be scheduled: %s", b.VM, last)
		}
		if err := Sleep(ctx, 250*time.Millisecond); err != nil {
			return Placement{}, err
		}
	}
}

func (b *FerryVM) Ready(ctx context.Context) (Placement, string) {
	vm := &v1alpha2.VirtualMachine{}
	if err := b.C.Get(ctx, client.ObjectKey{Namespace: b.NS, Name: b.VM}, vm); err != nil {
		return Placement{}, err.Error()
	}
	if vm.Status.Phase != v1alpha2.MachineRunning {
		c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionRunning)
		if c != nil {
			return Placement{}, fmt.Sprintf("phase %q (Running: %s %s)", vm.Status.Phase, c.Reason, c.Message)
		}
		return Placement{}, fmt.Sprintf("phase %q", vm.Status.Phase)
	}
	var p Placement
	for _, vp := range vm.Status.VirtualMachinePods {
		if vp.Active {
			p.Pod = vp.Name
		}
	}
	if p.Pod == "" {
		return Placement{}, "no active launcher pod"
	}
	pod := &corev1.Pod{}
	if err := b.C.Get(ctx, client.ObjectKey{Namespace: b.NS, Name: p.Pod}, pod); err != nil {
		return Placement{}, err.Error()
	}
	p.Node, p.RunDir = pod.Spec.NodeName, pod.Annotations[v1alpha2.AnnotationRunDir]
	if p.RunDir == "" {
		return Placement{}, "pod " + p.Pod + " has no run-dir annotation"
	}
	f := hypervisor.NewSerialFollower(filepath.Join(p.RunDir, hypervisor.SerialLogName))
	f.Poll()
	if _, _, ok := f.Heartbeat(); !ok {
		return Placement{}, "no heartbeat in " + p.RunDir
	}
	return p, ""
}

// Migrate evicts the VM once (or migrates it to TargetNode) and measures it. The error is
// for what stops the benchmark (interrupt, a VM that does not come back); a failed
// migration is a Sample.
func (b *FerryVM) Migrate(ctx context.Context) (Sample, Placement, error) {
	src, err := b.WaitReady(ctx, 3*time.Minute)
	if err != nil {
		return Sample{}, Placement{}, err
	}
	srcF := hypervisor.NewSerialFollower(filepath.Join(src.RunDir, hypervisor.SerialLogName))
	srcF.Poll()
	pg := b.startPinger(ctx, src)
	if pg != nil {
		defer pg.Stop()
	}
	op := b.newOperation()
	tw := watchMigration(ctx, b.C, b.NS, b.VM, src.Pod)
	defer tw.finish(0)
	t0 := time.Now()
	if err := b.C.Create(ctx, op); err != nil {
		return Sample{}, src, fmt.Errorf("creating the %s operation: %w", op.Spec.Type, err)
	}
	tw.created(op.Name, t0)
	key := client.ObjectKeyFromObject(op)
	var e2e time.Duration
	for done := false; !done; {
		if err := b.C.Get(ctx, key, op); err != nil && ctx.Err() == nil {
			if apierrors.IsNotFound(err) {
				return Sample{Outcome: MigrationFailed, Detail: fmt.Sprintf("vmop %s disappeared", key.Name)}, src, nil
			}
		}
		srcF.Poll()
		if b.Params == nil && op.Status.Migration != nil && op.Status.Migration.SourcePod != "" {
			b.captureParams(ctx, op.Status.Migration.SourcePod)
		}
		switch op.Status.Phase {
		case v1alpha2.OpCompleted:
			e2e = time.Since(t0)
			done = true
			continue
		case v1alpha2.OpFailed:
			return Sample{Outcome: MigrationFailed, Detail: b.describeFailure(op, "")}, src, nil
		}
		if time.Since(t0) > b.Timeout {
			detail := b.describeFailure(op, fmt.Sprintf("not finished after %s", b.Timeout))
			_ = b.C.Delete(context.WithoutCancel(ctx), op) // aborts it
			return Sample{Outcome: MigrationFailed, Detail: detail}, src, nil
		}
		if err := Sleep(ctx, 100*time.Millisecond); err != nil {
			return Sample{}, src, err
		}
	}
	ms := op.Status.Migration
	// The source pod goes a moment after the operation completes.
	s := Sample{E2E: e2e, Outcome: OK, Timeline: tw.finish(5 * time.Second)}
	if ms == nil {
		s.Outcome, s.Detail = PostFailure, fmt.Sprintf("vmop %s Completed without status.migration", op.Name)
		return s, src, nil
	}
	s.Transfer = time.Duration(ms.TransferMs) * time.Millisecond
	s.Downtime = time.Duration(ms.DowntimeMs) * time.Millisecond
	if pg != nil {
		var why string
		if s.Net, why = measureNet(ctx, pg, t0); why != "" {
			s.Outcome, s.Detail = PostFailure, fmt.Sprintf("vmop %s (%s → %s) Completed, then: %s", op.Name, ms.SourceNode, ms.TargetNode, why)
		}
	}
	srcF.Poll()
	last, _, _ := srcF.Heartbeat()

	target := &corev1.Pod{}
	if err := b.C.Get(ctx, client.ObjectKey{Namespace: b.NS, Name: ms.TargetPod}, target); err != nil {
		s.Outcome, s.Detail = PostFailure, fmt.Sprintf("vmop %s Completed but target pod %s: %v", op.Name, ms.TargetPod, err)
		return s, src, nil
	}
	dir := target.Annotations[v1alpha2.AnnotationRunDir]
	if dir == "" {
		s.Outcome, s.Detail = PostFailure, fmt.Sprintf("vmop %s Completed but target pod %s has no run dir", op.Name, ms.TargetPod)
		return s, src, nil
	}
	if why := HeartbeatCheck(ctx, filepath.Join(dir, hypervisor.SerialLogName), last, PostMigrationWindow); why != "" {
		s.Outcome = PostFailure
		s.Detail = fmt.Sprintf("vmop %s (%s → %s, pod %s → %s) Completed in %s, then: %s", op.Name, ms.SourceNode, ms.TargetNode,
			ms.SourcePod, ms.TargetPod, e2e.Round(time.Millisecond), why)
		if lines := b.LogLines(op.Name, ms.TargetPod); len(lines) > 0 {
			s.Detail += "\n    " + strings.Join(lines, "\n    ")
		}
	}
	return s, Placement{Pod: ms.TargetPod, Node: ms.TargetNode, RunDir: dir}, nil
}

// captureParams reads the migration request the controller put on the source pod.
func (b *FerryVM) captureParams(ctx context.Context, sourcePod string) {
	pod := &corev1.Pod{}
	if err := b.C.Get(ctx, client.ObjectKey{Namespace: b.NS, Name: sourcePod}, pod); err != nil {
		return
	}
	raw := pod.Annotations[v1alpha2.AnnotationMigrateTo]
	if raw == "" {
		return
	}
	var req v1alpha2.MigrationRequest
	if json.Unmarshal([]byte(raw), &req) == nil {
		b.Params = &req
	}
}

// describeFailure sums up a failed or stuck operation with the log lines that name it.
func (b *FerryVM) describeFailure(op *v1alpha2.VirtualMachineOperation, why string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "vmop %s phase %s", op.Name, op.Status.Phase)
	if why != "" {
		fmt.Fprintf(&sb, " (%s)", why)
	}
	if c := meta.FindStatusCondition(op.Status.Conditions, v1alpha2.OpConditionCompleted); c != nil {
		fmt.Fprintf(&sb, ", condition Completed=%s reason %s: %s", c.Status, c.Reason, c.Message)
	}
	target := ""
	if ms := op.Status.Migration; ms != nil {
		b, _ := json.Marshal(ms)
		fmt.Fprintf(&sb, "\n    status.migration: %s", b)
		target = ms.TargetPod
	}
	if lines := b.LogLines(op.Name, target); len(lines) > 0 {
		sb.WriteString("\n    " + strings.Join(lines, "\n    "))
	}
	return sb.String()
}

func (b *FerryVM) LogLines(words ...string) []string {
	if b.LogsDir == "" {
		return nil
	}
	return GrepLogs(b.LogsDir, 30, words...)
}

// startPinger pings the VM's address every 10 ms from the host, when the VM has a NIC
// (its launcher pod routes an address) and the benchmark may open a raw socket (root);
// nil otherwise.
func (b *FerryVM) startPinger(ctx context.Context, src Placement) *pinger.Pinger {
	if os.Geteuid() != 0 || b.NoPing {
		return nil
	}
	pod := &corev1.Pod{}
	if err := b.C.Get(ctx, client.ObjectKey{Namespace: b.NS, Name: src.Pod}, pod); err != nil || len(pod.Spec.Containers) == 0 ||
		!slices.Contains(pod.Spec.Containers[0].Args, "--ip") {
		return nil
	}
	vm := &v1alpha2.VirtualMachine{}
	if err := b.C.Get(ctx, client.ObjectKey{Namespace: b.NS, Name: b.VM}, vm); err != nil {
		return nil
	}
	addr, err := netip.ParseAddr(vm.Status.IPAddress)
	if err != nil {
		return nil
	}
	p, err := pinger.Start(ctx, pinger.Options{Target: addr})
	if err != nil {
		b.Say("Not measuring the network: %v", err)
		return nil
	}
	// A guest just booted may not have its address yet: measure from steady answers on.
	since := time.Now()
	for answeredTail(p.Snapshot()) < 20 {
		if time.Since(since) > 30*time.Second {
			b.Say("Not measuring the network of this migration: %s does not answer steadily (%s)", addr, p.Snapshot())
			p.Stop()
			return nil
		}
		if Sleep(ctx, 50*time.Millisecond) != nil {
			p.Stop()
			return nil
		}
	}
	return p
}

// netSettle is how long after a completed migration the address must answer again.
const netSettle = 5 * time.Second

// measureNet waits until the address answers steadily again (20 replies in a row to probes
// sent after now) and reads what the pinger saw since t0. why says what went wrong.
func measureNet(ctx context.Context, pg *pinger.Pinger, t0 time.Time) (*NetSample, string) {
	done := time.Now()
	for {
		r := pg.Snapshot().Between(done, time.Now())
		if tail := answeredTail(r); tail >= 20 {
			break
		}
		if time.Since(done) > netSettle {
			return nil, fmt.Sprintf("the VM's address did not answer steadily within %s: %s", netSettle, r)
		}
		if err := Sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, err.Error()
		}
	}
	r := pg.Stop().Between(t0, time.Now())
	return &NetSample{Sent: r.Sent, Lost: r.Lost, Outage: r.Downtime(), Silence: r.LongestSilence()}, ""
}

// answeredTail counts the answered probes at the end of r.
func answeredTail(r pinger.Result) int {
	n := 0
	for i := len(r.Probes) - 1; i >= 0 && r.Probes[i].Answered; i-- {
		n++
	}
	return n
}
