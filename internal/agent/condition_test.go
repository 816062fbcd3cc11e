package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/watchdog"
)

// TestResolveWatchdog: auto is the device at its path (default /dev/watchdog) when that is a
// character device, else none with why; other values stay as they are.
func TestResolveWatchdog(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "watchdog")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec, want, absent string
	}{
		{"auto:/dev/null", "device:/dev/null", ""}, // a character device every machine has
		{"auto:" + filepath.Join(dir, "missing"), "none", "does not exist"},
		{"auto:" + file, "none", "is not a character device"},
		{"auto:" + dir, "none", "is not a character device"},
		{"none", "none", ""},
		{"device:/dev/watchdog", "device:/dev/watchdog", ""},
		{"process:/run/wd.sock", "process:/run/wd.sock", ""},
	} {
		got, absent := resolveWatchdog(tc.spec)
		if got != tc.want || (tc.absent == "") != (absent == "") || !strings.Contains(absent, tc.absent) {
			t.Errorf("%s: %q (%q), want %q (%q)", tc.spec, got, absent, tc.want, tc.absent)
		}
	}
	// auto alone looks at /dev/watchdog: whatever this machine has, it says so.
	got, absent := resolveWatchdog("auto")
	if fi, err := os.Stat(DefaultWatchdogDevice); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		if got != "device:"+DefaultWatchdogDevice {
			t.Errorf("auto with %s present: %q", DefaultWatchdogDevice, got)
		}
	} else if got != "none" || !strings.Contains(absent, DefaultWatchdogDevice) {
		t.Errorf("auto without %s: %q (%q)", DefaultWatchdogDevice, got, absent)
	}
}

// kubeletNode is Node n1 as a kubelet registered it: Ready, with an address.
func kubeletNode(annotations map[string]string) *corev1.Node {
	n := node(annotations)
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}}
	return n
}

// nodeConditions reads n1's fencing condition and whether the kubelet's are intact.
func nodeConditions(t *testing.T, c client.Client) (*corev1.NodeCondition, *corev1.Node) {
	t.Helper()
	var n corev1.Node
	if err := c.Get(context.Background(), client.ObjectKey{Name: "n1"}, &n); err != nil {
		t.Fatal(err)
	}
	ready := false
	var fencing *corev1.NodeCondition
	for i, c := range n.Status.Conditions {
		switch c.Type {
		case corev1.NodeReady:
			ready = c.Status == corev1.ConditionTrue && c.Reason == "KubeletReady"
		case v1alpha2.NodeConditionFencing:
			fencing = &n.Status.Conditions[i]
		}
	}
	if !ready || len(n.Status.Addresses) != 1 {
		t.Errorf("the kubelet's status was lost: conditions %+v, addresses %+v", n.Status.Conditions, n.Status.Addresses)
	}
	return fencing, &n
}

func conditionClient(objs ...client.Object) client.Client {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = deckhousev1.AddToScheme(scheme)
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&corev1.Node{}).Build()
}

// TestWatchdogCondition: what the condition says for each kind of watchdog and for none.
func TestWatchdogCondition(t *testing.T) {
	for _, tc := range []struct {
		spec   string
		wd     Watchdog
		absent string
		status corev1.ConditionStatus
		reason string
		says   []string
	}{
		{"device:/dev/watchdog", watchdog.NewDevice("/dev/watchdog"), "", corev1.ConditionTrue, v1alpha2.ReasonWatchdogDevice, []string{"device:/dev/watchdog"}},
		{"process:/x.sock", &watchdog.Fake{}, "", corev1.ConditionTrue, v1alpha2.ReasonWatchdogProcess, []string{"process:/x.sock"}},
		// Options.WatchdogDevice, set in code (simulated nodes, tests): no spec.
		{"", &watchdog.Fake{}, "", corev1.ConditionTrue, v1alpha2.ReasonSimulatedWatchdog, []string{"simulated"}},
		{"none", nil, "/dev/watchdog does not exist", corev1.ConditionFalse, v1alpha2.ReasonNoWatchdogDevice,
			[]string{"/dev/watchdog does not exist", "not restarted on other nodes", "softdog", "NodeGroup"}},
		{"none", nil, "", corev1.ConditionFalse, v1alpha2.ReasonWatchdogDisabled, []string{"--watchdog=none", "not restarted on other nodes"}},
	} {
		c := watchdogCondition(tc.spec, tc.wd, tc.absent)
		if c.Status != tc.status || c.Reason != tc.reason {
			t.Errorf("%s (%s): %s/%s, want %s/%s", tc.spec, tc.absent, c.Status, c.Reason, tc.status, tc.reason)
		}
		for _, s := range tc.says {
			if !strings.Contains(c.Message, s) {
				t.Errorf("%s (%s): message %q does not say %q", tc.spec, tc.absent, c.Message, s)
			}
		}
	}
}

// TestFencerShowsCondition: the fencer shows its watchdog on the Node, beside the kubelet's
// conditions, and writes again only when what it says changes.
func TestFencerShowsCondition(t *testing.T) {
	ctx := context.Background()
	f, _, _ := newFencer(t, kubeletNode(nil), group(deckhousev1.ProfileFast))
	f.c = conditionClient(kubeletNode(nil), group(deckhousev1.ProfileFast))
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	c, n := nodeConditions(t, f.c)
	if c == nil || c.Status != corev1.ConditionTrue || c.Reason != v1alpha2.ReasonSimulatedWatchdog {
		t.Fatalf("fencing condition %+v, want True %s", c, v1alpha2.ReasonSimulatedWatchdog)
	}
	rv := n.ResourceVersion
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, n := nodeConditions(t, f.c); n.ResourceVersion != rv {
		t.Errorf("the Node was written again with nothing new to say (resourceVersion %s, was %s)", n.ResourceVersion, rv)
	}
}

// failingWatchdog cannot be armed while fail is set (a device another program holds).
type failingWatchdog struct {
	watchdog.Fake
	fail bool
}

func (w *failingWatchdog) Arm(timeout time.Duration) error {
	if w.fail {
		return errors.New("device or resource busy")
	}
	return w.Fake.Arm(timeout)
}

// TestFencerArmFailure: a watchdog that cannot be armed makes the Node say the node cannot
// be fenced and shows no armed timing; once it arms, the Node says it can again.
func TestFencerArmFailure(t *testing.T) {
	ctx := context.Background()
	f, _, _ := newFencer(t, kubeletNode(nil), group(deckhousev1.ProfileFast))
	f.c = conditionClient(kubeletNode(nil), group(deckhousev1.ProfileFast))
	wd := &failingWatchdog{fail: true}
	f.wd, f.spec = wd, "device:/dev/watchdog"
	f.cond = watchdogCondition(f.spec, wd, "")
	if err := f.sync(ctx); err == nil {
		t.Fatal("sync with a watchdog that cannot be armed: no error")
	}
	c, n := nodeConditions(t, f.c)
	if c == nil || c.Status != corev1.ConditionFalse || c.Reason != v1alpha2.ReasonWatchdogFailed || !strings.Contains(c.Message, "device or resource busy") {
		t.Fatalf("fencing condition %+v, want False %s with the error", c, v1alpha2.ReasonWatchdogFailed)
	}
	if _, ok := v1alpha2.ArmedTiming(n.Annotations); ok {
		t.Errorf("the Node shows an armed watchdog that never armed: %v", n.Annotations)
	}
	if why := v1alpha2.NotFenceable(n.Status.Conditions); why == "" {
		t.Error("NotFenceable says nothing of a node whose watchdog failed")
	}

	wd.fail = false
	if err := f.sync(ctx); err != nil {
		t.Fatal(err)
	}
	c, n = nodeConditions(t, f.c)
	if c == nil || c.Status != corev1.ConditionTrue || c.Reason != v1alpha2.ReasonWatchdogDevice {
		t.Fatalf("fencing condition %+v after arming, want True %s", c, v1alpha2.ReasonWatchdogDevice)
	}
	if tm, ok := v1alpha2.ArmedTiming(n.Annotations); !ok || tm.Timeout != 5*time.Second {
		t.Errorf("annotations %v after arming, want a 5s watchdog", n.Annotations)
	}
}

// TestKeepUnfencedCondition: an agent without a watchdog says so on its Node (once it is
// registered), keeps the kubelet's conditions, takes back an armed timing an earlier agent
// left, and says it again on a Node registered anew.
func TestKeepUnfencedCondition(t *testing.T) {
	c := conditionClient()
	cond := watchdogCondition("none", nil, "/dev/watchdog does not exist")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		keepUnfencedCondition(ctx, c, "n1", cond, 50*time.Millisecond, logr.Discard())
	}()
	defer func() { cancel(); <-done }()

	// The kubelet registers the Node a moment later; an earlier agent had armed a watchdog.
	time.Sleep(100 * time.Millisecond)
	left := map[string]string{v1alpha2.AnnotationWatchdogTimeout: "5s", v1alpha2.AnnotationLeaseInterval: "1s"}
	if err := c.Create(context.Background(), kubeletNode(left)); err != nil {
		t.Fatal(err)
	}
	shown := func() (bool, error) {
		fc, n := nodeConditions(t, c)
		_, armed := v1alpha2.ArmedTiming(n.Annotations)
		return fc != nil && fc.Status == corev1.ConditionFalse && fc.Reason == v1alpha2.ReasonNoWatchdogDevice && !armed, nil
	}
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) { return shown() }); err != nil {
		fc, n := nodeConditions(t, c)
		t.Fatalf("condition %+v, annotations %v: want False %s and no armed timing", fc, n.Annotations, v1alpha2.ReasonNoWatchdogDevice)
	}

	// Registered anew (after a reset, or by hand): said again.
	if err := c.Delete(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(context.Background(), kubeletNode(nil)); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) { return shown() }); err != nil {
		t.Fatal("the Node registered anew does not say it has no watchdog")
	}
}

// TestWatchdogFlagRefusesFakes: no --watchdog value makes a watchdog that never resets the
// node (a node that looks fenceable and is not); the agent refuses it at start, in any role,
// and says what it takes. Tests and simulated nodes set Options.WatchdogDevice instead.
func TestWatchdogFlagRefusesFakes(t *testing.T) {
	for _, spec := range []string{"fake", "fake:x", "simulated", "device:", "process:", "softdog"} {
		for _, role := range []kubelet.Role{kubelet.RoleAll, kubelet.RoleHandler, kubelet.RoleKubelet} {
			err := Run(t.Context(), &rest.Config{Host: "https://127.0.0.1:1"}, Options{Role: role, NodeName: "n1", Watchdog: spec, Log: logr.Discard()})
			if err == nil || !strings.Contains(err.Error(), watchdogValues) {
				t.Errorf("--watchdog=%s (role %v): %v, want a refusal that lists %s", spec, role, err, watchdogValues)
			}
		}
	}
	for _, spec := range []string{"", "none", "auto", "auto:/dev/watchdog0", "device:/dev/watchdog", "process:/run/wd.sock"} {
		if err := checkWatchdog(spec); err != nil {
			t.Errorf("--watchdog=%s refused: %v", spec, err)
		}
	}
	if err := checkWatchdog("fake"); err == nil || !strings.Contains(err.Error(), "never resets the node") {
		t.Errorf("--watchdog=fake: %v, want it to say why a fake is no value", err)
	}
}
