package deploy

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/controller/fencing"
	"github.com/ferryvm/ferry/internal/controller/migration"
	"github.com/ferryvm/ferry/internal/ipam"
	"github.com/ferryvm/ferry/internal/watchdog"
)

// TestControllerAndAgentRunOnTheirOwnTokens runs the real controller manager and a real
// node agent as the DaemonSet runs it (--role handler) with the ServiceAccount tokens the
// manifests give them (the agent's bound to its Pod, so the node policies apply), beside a
// stand-in kubelet (agent --role kubelet, on the admin's credentials) that registers the
// Node, and checks that they do their work and are refused nothing: the controller elects
// itself leader and writes a NodeGroup's status; the agent renews its own Lease in
// ferry-node-lease, arms its watchdog and shows it on the Node (annotations and its
// condition) and labels its Node with its QEMU's CPU features; a second node's agent, which finds no watchdog device (--watchdog=auto),
// runs all the same and says on its Node that the node is never fenced.
func TestControllerAndAgentRunOnTheirOwnTokens(t *testing.T) {
	install(t)
	ctx := context.Background()
	// node's agent has a watchdog; bare's finds none (--watchdog=auto, no device).
	const node, bare, group = "run-c", "run-d", "run-fencing"
	ng := &deckhousev1.NodeGroup{
		ObjectMeta: metav1.ObjectMeta{Name: group},
		Spec: deckhousev1.NodeGroupSpec{Fencing: &deckhousev1.FencingSpec{
			Mode: deckhousev1.FencingWatchdog, Watchdog: &deckhousev1.WatchdogSpec{Profile: deckhousev1.ProfileFast},
		}},
	}
	if err := admin.Create(ctx, ng); err != nil {
		t.Fatal(err)
	}
	// The agent's Pod, as the DaemonSet would make it: its token names the node.
	agentPod := placeholderPod(t, namespace, "ferry-agent-"+node, node, "ferry-agent")
	barePod := placeholderPod(t, namespace, "ferry-agent-"+bare, bare, "ferry-agent")
	refused := &refusals{}
	agentCfg := refused.wrap("agent", configFor(tokenFor(t, "ferry-agent", agentPod)))
	bareCfg := refused.wrap("agent without a watchdog", configFor(tokenFor(t, "ferry-agent", barePod)))
	ctrlCfg := refused.wrap("controller", configFor(tokenFor(t, "ferry-controller", nil)))

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ctrlDone, agentDone, kubeletDone := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	bareDone, bareKubeletDone := make(chan error, 1), make(chan error, 1)
	go func() {
		ctrlDone <- controller.Run(runCtx, ctrlCfg, controller.Options{
			StorageDir: t.TempDir(), IPRange: ipam.DefaultRanges, VMNetwork: controller.NetworkRouted,
			LauncherImage: "ferryvm/ferry:test", MetricsAddr: "0", HealthAddr: "0",
			Migration: migration.DefaultConfig(), FencingMaxUnreachable: fencing.DefaultMaxUnreachable,
			LeaderElection: true, LeaderElectionNamespace: namespace,
		})
	}()
	state := t.TempDir()
	go func() {
		kubeletDone <- agent.Run(runCtx, cfg, agent.Options{
			Role: kubelet.RoleKubelet, NodeName: node, NodeIP: "127.0.0.1", Labels: map[string]string{deckhousev1.LabelNodeGroup: group},
			CPU: "2", Memory: "4Gi", StateDir: state, Log: logr.Discard(),
		})
	}()
	go func() {
		agentDone <- agent.Run(runCtx, agentCfg, agent.Options{
			Role: kubelet.RoleHandler, NodeName: node, NodeIP: "127.0.0.1", StateDir: state, WatchdogDevice: &watchdog.Fake{},
			MaxUnreachable: fencing.DefaultMaxUnreachable, Log: testr.New(t),
		})
	}()
	// A node without a watchdog device: its agent, as the DaemonSet runs it (--watchdog=auto),
	// starts all the same and says on the Node that the node is never fenced.
	bareState := t.TempDir()
	go func() {
		bareKubeletDone <- agent.Run(runCtx, cfg, agent.Options{
			Role: kubelet.RoleKubelet, NodeName: bare, NodeIP: "127.0.0.1", Labels: map[string]string{deckhousev1.LabelNodeGroup: group},
			CPU: "2", Memory: "4Gi", StateDir: bareState, Log: logr.Discard(),
		})
	}()
	go func() {
		bareDone <- agent.Run(runCtx, bareCfg, agent.Options{
			Role: kubelet.RoleHandler, NodeName: bare, NodeIP: "127.0.0.1", StateDir: bareState,
			Watchdog: "auto:" + filepath.Join(bareState, "no-watchdog"), Log: testr.New(t),
		})
	}()

	// A part that ends before the test stops it failed to start: say why at once.
	for who, done := range map[string]chan error{"agent": agentDone, "stand-in kubelet": kubeletDone,
		"agent without a watchdog": bareDone, "its stand-in kubelet": bareKubeletDone} {
		select {
		case err := <-done:
			t.Fatalf("the %s ended at start: %v", who, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	eventually(t, 60*time.Second, "the controller leads (Lease ferry-system/ferry-controller)", func() (bool, string) {
		var l coordinationv1.Lease
		if err := admin.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "ferry-controller"}, &l); err != nil {
			return false, err.Error()
		}
		return l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "", fmt.Sprintf("holder %v", l.Spec.HolderIdentity)
	})
	eventually(t, 60*time.Second, "the agent shows its armed watchdog on Node "+node, func() (bool, string) {
		var n corev1.Node
		if err := admin.Get(ctx, client.ObjectKey{Name: node}, &n); err != nil {
			return false, err.Error()
		}
		return n.Annotations[v1alpha2.AnnotationWatchdogTimeout] == "5s", fmt.Sprintf("annotations %v, labels %v, refused %v", n.Annotations, n.Labels, refused.list())
	})
	fencingCondition := func(name string) (*corev1.NodeCondition, *corev1.Node, error) {
		var n corev1.Node
		if err := admin.Get(ctx, client.ObjectKey{Name: name}, &n); err != nil {
			return nil, nil, err
		}
		for i, c := range n.Status.Conditions {
			if c.Type == v1alpha2.NodeConditionFencing {
				return &n.Status.Conditions[i], &n, nil
			}
		}
		return nil, &n, nil
	}
	eventually(t, 30*time.Second, "Node "+node+" says its agent has a watchdog", func() (bool, string) {
		c, _, err := fencingCondition(node)
		return err == nil && c != nil && c.Status == corev1.ConditionTrue && c.Reason == v1alpha2.ReasonSimulatedWatchdog, fmt.Sprintf("%+v %v, refused %v", c, err, refused.list())
	})
	eventually(t, 30*time.Second, "Node "+bare+" says it has no watchdog device and is never fenced", func() (bool, string) {
		c, n, err := fencingCondition(bare)
		if err != nil || c == nil {
			return false, fmt.Sprintf("%v, refused %v", err, refused.list())
		}
		ready := false
		for _, k := range n.Status.Conditions {
			ready = ready || (k.Type == corev1.NodeReady && k.Status == corev1.ConditionTrue)
		}
		return c.Status == corev1.ConditionFalse && c.Reason == v1alpha2.ReasonNoWatchdogDevice && strings.Contains(c.Message, "softdog") && ready,
			fmt.Sprintf("%+v; the kubelet's Ready kept: %v", c, ready)
	})
	// The agent probes the node's QEMU and labels its own Node with what it offers, on its
	// own token (the policy lets it change those labels only); the kubelet's labels stay.
	eventually(t, 60*time.Second, "the agent labels Node "+node+" with its QEMU's CPU features and models", func() (bool, string) {
		var n corev1.Node
		if err := admin.Get(ctx, client.ObjectKey{Name: node}, &n); err != nil {
			return false, err.Error()
		}
		l := n.Labels
		return l[v1alpha2.LabelCPUFeaturePrefix+"sse2"] == "true" && l[v1alpha2.LabelCPUModelPrefix+"qemu64"] == "true" && l[deckhousev1.LabelNodeGroup] == group,
			fmt.Sprintf("labels %v, refused %v", l, refused.list())
	})
	var first time.Time
	eventually(t, 30*time.Second, "the agent renews Lease "+v1alpha2.FencingLeaseNamespace+"/"+node, func() (bool, string) {
		var l coordinationv1.Lease
		if err := admin.Get(ctx, client.ObjectKey{Namespace: v1alpha2.FencingLeaseNamespace, Name: node}, &l); err != nil || l.Spec.RenewTime == nil {
			return false, fmt.Sprint(err)
		}
		if first.IsZero() {
			first = l.Spec.RenewTime.Time
		}
		return l.Spec.RenewTime.After(first), fmt.Sprintf("renewed at %s, first seen %s", l.Spec.RenewTime, first)
	})
	eventually(t, 30*time.Second, "the controller writes NodeGroup "+group+"'s status", func() (bool, string) {
		var g deckhousev1.NodeGroup
		if err := admin.Get(ctx, client.ObjectKey{Name: group}, &g); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(g.Status.Conditions, v1alpha2.NodeGroupConditionFencing)
		return g.Status.Nodes == 2 && c != nil, fmt.Sprintf("nodes %d, condition %+v", g.Status.Nodes, c)
	})

	stop()
	for who, done := range map[string]chan error{"controller": ctrlDone, "agent": agentDone, "stand-in kubelet": kubeletDone,
		"agent without a watchdog": bareDone, "its stand-in kubelet": bareKubeletDone} {
		select {
		case err := <-done:
			// Leader election reports a lost lock when it stops with its context.
			if err != nil && !strings.Contains(err.Error(), "leader election lost") {
				t.Errorf("the %s ended with %v", who, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the %s did not stop within 30s", who)
		}
	}
	r := refused.list()
	if len(r) > 0 {
		t.Errorf("refused %d request(s):\n  %s", len(r), strings.Join(r, "\n  "))
	} else {
		t.Logf("the controller and the agent ran on their own tokens and were refused nothing")
	}
	// The record does see refusals: one the agent may not make is in it.
	cs, err := kubernetes.NewForConfig(agentCfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{})
	if after := refused.list(); !apierrors.IsForbidden(err) || len(after) != len(r)+1 {
		t.Errorf("listing secrets as the agent: %v; refusals recorded %v, want one more than %d", err, after, len(r))
	}
}
