package agent

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/watchdog"
)

func newFencer(t *testing.T, objs ...client.Object) (*fencer, *watchdog.Fake, *time.Duration) {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = deckhousev1.AddToScheme(scheme)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	wd := &watchdog.Fake{}
	interval := new(time.Duration)
	f := &fencer{c: c, node: "n1", wd: wd, log: logr.Discard(), defaultInterval: 2 * time.Second,
		interval: func(d time.Duration) { *interval = d }, cond: watchdogCondition("", wd, "")}
	return f, wd, interval
}

func group(profile deckhousev1.FencingProfile) *deckhousev1.NodeGroup {
	g := &deckhousev1.NodeGroup{ObjectMeta: metav1.ObjectMeta{Name: "worker"}}
	if profile != "" {
		g.Spec.Fencing = &deckhousev1.FencingSpec{Mode: deckhousev1.FencingWatchdog, Watchdog: &deckhousev1.WatchdogSpec{Profile: profile}}
	}
	return g
}

func node(annotations map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{deckhousev1.LabelNodeGroup: "worker"}, Annotations: annotations}}
}

func annotations(t *testing.T, f *fencer) map[string]string {
	t.Helper()
	var n corev1.Node
	if err := f.c.Get(context.Background(), client.ObjectKey{Name: "n1"}, &n); err != nil {
		t.Fatal(err)
	}
	return n.Annotations
}

func TestFencerArmsFeedsAndDisarms(t *testing.T) {
	ctx := context.Background()
	g := group(deckhousev1.ProfileFast)
	f, wd, interval := newFencer(t, node(nil), g)

	// No feeding before arming.
	f.renewed(time.Now(), time.Millisecond)
	if wd.Feeds() != 0 {
		t.Fatal("fed a watchdog that is not armed")
	}
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !wd.Armed() || wd.Timeout() != 5*time.Second || *interval != time.Second {
		t.Fatalf("armed %v with %s, lease every %s; want 5s and 1s", wd.Armed(), wd.Timeout(), *interval)
	}
	if a := annotations(t, f); a[v1alpha2.AnnotationWatchdogTimeout] != "5s" || a[v1alpha2.AnnotationLeaseInterval] != "1s" {
		t.Fatalf("node annotations %v", a)
	}

	// A timely renewal feeds; one slower than the interval does not.
	f.renewed(time.Now(), 300*time.Millisecond)
	f.renewed(time.Now(), 1500*time.Millisecond)
	if wd.Feeds() != 1 {
		t.Fatalf("feeds = %d, want 1", wd.Feeds())
	}

	// A longer timeout is shown on the node before it is armed.
	g.Spec.Fencing.Watchdog.Profile = deckhousev1.ProfileTolerant
	if err := f.c.Update(ctx, g); err != nil {
		t.Fatal(err)
	}
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	calls := wd.Calls()
	if last := calls[len(calls)-1]; last.Op != "arm" || last.Timeout != 20*time.Second {
		t.Fatalf("last call %+v, want arm 20s", last)
	}
	if a := annotations(t, f); a[v1alpha2.AnnotationWatchdogTimeout] != "20s" {
		t.Fatalf("node annotations %v", a)
	}

	// An admin disarms the node for maintenance.
	n := node(map[string]string{v1alpha2.AnnotationFencingDisarmed: "firmware update"})
	var cur corev1.Node
	_ = f.c.Get(ctx, client.ObjectKey{Name: "n1"}, &cur)
	cur.Annotations[v1alpha2.AnnotationFencingDisarmed] = n.Annotations[v1alpha2.AnnotationFencingDisarmed]
	if err := f.c.Update(ctx, &cur); err != nil {
		t.Fatal(err)
	}
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if wd.Armed() || *interval != 2*time.Second {
		t.Fatalf("still armed (%v) or lease interval %s after the disarm annotation", wd.Armed(), *interval)
	}
	if a := annotations(t, f); a[v1alpha2.AnnotationWatchdogTimeout] != "" {
		t.Fatalf("node still shows an armed watchdog: %v", a)
	}
}

func TestFencerWithoutFencing(t *testing.T) {
	f, wd, _ := newFencer(t, node(nil), group(""))
	if err := f.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if wd.Armed() || len(wd.Calls()) != 0 {
		t.Fatalf("watchdog touched for a group without fencing: %+v", wd.Calls())
	}
	if a := annotations(t, f); a[v1alpha2.AnnotationWatchdogTimeout] != "" || a[v1alpha2.AnnotationLeaseInterval] != "2s" {
		t.Fatalf("node annotations %v", a)
	}
}

// A watchdog that restarted forgot it was armed: the next feed arms it again.
func TestFencerRearmsARestartedWatchdog(t *testing.T) {
	f, wd, _ := newFencer(t, node(nil), group(deckhousev1.ProfileCritical))
	if err := f.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	_ = wd.Disarm() // as a restarted watchdog process is
	f.renewed(time.Now(), 100*time.Millisecond)
	if !wd.Armed() || wd.Timeout() != 2*time.Second {
		t.Fatalf("armed %v with %s after a feed found it unarmed", wd.Armed(), wd.Timeout())
	}
}

// A node fenced while its agent lived is registered anew, without annotations: the agent
// shows its armed watchdog again, or the cluster would never fence the node again.
func TestFencerShowsItsWatchdogOnANewNode(t *testing.T) {
	ctx := context.Background()
	f, _, _ := newFencer(t, node(nil), group(deckhousev1.ProfileFast))
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Delete(ctx, node(nil)); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Create(ctx, node(nil)); err != nil {
		t.Fatal(err)
	}
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if a := annotations(t, f); a[v1alpha2.AnnotationWatchdogTimeout] != "5s" {
		t.Fatalf("the new Node does not show the armed watchdog: %v", a)
	}
}

// TestFencerFeedsThroughAnOutageOnlyOnAPeersProvenWord: an armed node whose Lease renewals
// stopped feeds its watchdog itself only while a peer, proven by its certificate, says that
// it cannot reach the control plane either. The same answer spoofed in plain HTTP at the
// peer's address leaves the node to its watchdog: it resets, as a node cut off alone must.
func TestFencerFeedsThroughAnOutageOnlyOnAPeersProvenWord(t *testing.T) {
	ca := newCA(t)
	port := freePort(t)
	servePeer(t, "127.0.0.80", port, "n2", false, fixed(nodeCreds(t, ca, "n2")))
	spoof := serveImpostor(t, "127.0.0.81", port, "n2", nil)
	for _, tc := range []struct {
		name, ip string
		feeds    bool
	}{
		{"n2 itself", "127.0.0.80", true},
		{"a spoofed plain-HTTP answer for n2", "127.0.0.81", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, wd, _ := newFencer(t, node(nil), group(deckhousev1.ProfileFast))
			if err := f.sync(context.Background()); err != nil {
				t.Fatal(err)
			}
			f.peers = &peers{self: "n1", port: port, maxUnreachable: 0.49, creds: fixed(nodeCreds(t, ca, "n1")),
				addrs: map[string]string{"n2": tc.ip}}
			before := wd.Feeds() // no renewal feeds it from here on
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); f.watchOutage(ctx) }()
			defer func() { cancel(); <-done }()
			err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
				if tc.feeds {
					return wd.Feeds() > before, nil
				}
				// The loop asks, feeds or not, then asks again: after a second question the
				// first one's feed would have come.
				return spoof.asked.Load() >= 2, nil
			})
			if err != nil {
				t.Fatalf("waiting for the outage check (feeds %d → %d, spoof asked %d times): %v", before, wd.Feeds(), spoof.asked.Load(), err)
			}
			if !tc.feeds && wd.Feeds() != before {
				t.Fatalf("fed the watchdog %d times on a spoofed answer", wd.Feeds()-before)
			}
		})
	}
}
