package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestAgentChangesOnlyItsOwnNode gives the agent's ServiceAccount a token bound to a Pod on
// node A, as the kubelet does, and checks that kube-apiserver names node A in it, that the
// policies of agent-node-restriction.yaml let it change node A's Node, Lease and pods but
// refuse, with their message, node B's, and that RBAC refuses it the kubelet's part.
func TestAgentChangesOnlyItsOwnNode(t *testing.T) {
	install(t)
	ctx := context.Background()
	const a, b = "restrict-a", "restrict-b"
	for _, n := range []string{a, b} {
		if err := admin.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"team": "a"}}}); err != nil {
			t.Fatal(err)
		}
	}
	ns := newNamespace(t, "vms-")
	placeholderPod(t, ns, "vm-a", a, "")
	placeholderPod(t, ns, "vm-b", b, "")
	agentPod := placeholderPod(t, namespace, "ferry-agent-"+a, a, "ferry-agent")
	leaseB := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: v1alpha2.FencingLeaseNamespace, Name: b}}
	if err := admin.Create(ctx, leaseB); err != nil {
		t.Fatal(err)
	}
	policiesTypeCheck(t)

	agent, err := kubernetes.NewForConfig(configFor(tokenFor(t, "ferry-agent", agentPod)))
	if err != nil {
		t.Fatal(err)
	}
	// Who kube-apiserver takes the token for: the node is in the user's extra.
	who, err := agent.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := who.Status.UserInfo
	t.Logf("the Pod-bound token authenticates as %s, extra %v", u.Username, u.Extra)
	if u.Username != agentUser || !slices.Equal(u.Extra[nodeExtra], authenticationv1.ExtraValue{a}) {
		t.Fatalf("kube-apiserver took the agent's token for %s with %s=%v, want %s with [%s]", u.Username, nodeExtra, u.Extra[nodeExtra], agentUser, a)
	}

	// Roles and policies reach the apiserver's caches a moment after they are written.
	annotate := []byte(`{"metadata":{"annotations":{"virtualization.ferryvm.io/lease-interval":"2s"}}}`)
	eventually(t, 30*time.Second, "the policy refuses the agent on node A a change to Node B", func() (bool, string) {
		_, err := agent.CoreV1().Nodes().Patch(ctx, b, types.MergePatchType, annotate, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		return refusedWith(err, "may not update Node "+b), fmt.Sprint(err)
	})

	nodes, leases, events := agent.CoreV1().Nodes(), agent.CoordinationV1().Leases(v1alpha2.FencingLeaseNamespace), agent.CoreV1().Events(metav1.NamespaceDefault)
	pods := agent.CoreV1().Pods(ns)
	onA := "ferry-agent on node " + a + " may not "
	gate := []byte(`{"status":{"conditions":[{"type":"` + v1alpha2.PodConditionGuestReady + `","status":"True","reason":"GuestRunning"}]}}`)
	// The agent's condition on its Node (condition.go showCondition), and what it must not
	// touch in a Node's status: the kubelet's conditions and the rest.
	fencingCond := []byte(`{"status":{"conditions":[{"type":"` + v1alpha2.NodeConditionFencing + `","status":"False","reason":"NoWatchdogDevice","message":"test"}]}}`)
	readyCond := []byte(`{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}`)
	addresses := []byte(`{"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.99"}]}}`)
	endpoints := []byte(`{"status":{"daemonEndpoints":{"kubeletEndpoint":{"Port":10999}}}}`)
	onlyOwn := "only its condition " + v1alpha2.NodeConditionFencing
	cpuLabels := []byte(`{"metadata":{"labels":{"` + v1alpha2.LabelCPUFeaturePrefix + `sse2":"true","` + v1alpha2.LabelCPUFeaturePrefix + `sse4.2":"true","` + v1alpha2.LabelCPUModelPrefix + `Nehalem":"true"}}}`)
	for _, c := range []struct {
		what    string
		call    func() error
		refusal string // "" when allowed
	}{
		{"patch Node A (fencing.go publish)", func() error {
			_, err := nodes.Patch(ctx, a, types.MergePatchType, annotate, metav1.PatchOptions{})
			return err
		}, ""},
		{"label Node A with CPU features and models, and remove one (cpulabels.go syncCPULabels)", func() error {
			_, err := nodes.Patch(ctx, a, types.MergePatchType, cpuLabels, metav1.PatchOptions{})
			if err == nil {
				_, err = nodes.Patch(ctx, a, types.MergePatchType, []byte(`{"metadata":{"labels":{"`+v1alpha2.LabelCPUFeaturePrefix+`sse2":null}}}`), metav1.PatchOptions{})
			}
			return err
		}, ""},
		{"patch Node A's other labels", func() error {
			_, err := nodes.Patch(ctx, a, types.MergePatchType, []byte(`{"metadata":{"labels":{"group":"blue"}}}`), metav1.PatchOptions{})
			return err
		}, "ferry-agent on node " + a + " may change among the labels of Node " + a + " only cpu-feature.node.virtualization.deckhouse.io/* and cpu-model.node.virtualization.deckhouse.io/*"},
		{"remove Node A's admin label", func() error {
			_, err := nodes.Patch(ctx, a, types.MergePatchType, []byte(`{"metadata":{"labels":{"team":null}}}`), metav1.PatchOptions{})
			return err
		}, "may change among the labels of Node " + a + " only"},
		{"change Node A's admin label while labelling CPU features", func() error {
			_, err := nodes.Patch(ctx, a, types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"b","`+v1alpha2.LabelCPUFeaturePrefix+`avx":"true"}}}`), metav1.PatchOptions{})
			return err
		}, "may change among the labels of Node " + a + " only"},
		{"label Node B with a CPU feature", func() error {
			_, err := nodes.Patch(ctx, b, types.MergePatchType, cpuLabels, metav1.PatchOptions{})
			return err
		}, onA + "update Node " + b},
		{"patch Node A's fencing condition (condition.go showCondition)", func() error {
			_, err := nodes.Patch(ctx, a, types.StrategicMergePatchType, fencingCond, metav1.PatchOptions{}, "status")
			return err
		}, ""},
		{"create Lease A in ferry-node-lease (kubelet/node.go renewLease)", func() error {
			_, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: a}, Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(a)}}, metav1.CreateOptions{})
			return err
		}, ""},
		{"update Lease A", func() error { return renewLease(ctx, agent, v1alpha2.FencingLeaseNamespace, a) }, ""},
		{"patch the guest-ready gate of pod vm-a on node A (kubelet/handler.go reportGuest)", func() error {
			_, err := pods.Patch(ctx, "vm-a", types.StrategicMergePatchType, gate, metav1.PatchOptions{}, "status")
			return err
		}, ""},
		{"patch pod vm-a on node A (kubelet/pods.go annotateRunDir)", func() error {
			_, err := pods.Patch(ctx, "vm-a", types.MergePatchType, []byte(`{"metadata":{"annotations":{"virtualization.ferryvm.io/run-dir":"/x"}}}`), metav1.PatchOptions{})
			return err
		}, ""},
		{"create an event in default (rejoin.go recordReset)", func() error {
			_, err := events.Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: a + "."},
				InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: a, APIVersion: "v1"}, Reason: "NodeReset", Message: "test"}, metav1.CreateOptions{})
			return err
		}, ""},
		{"patch Node B", func() error {
			_, err := nodes.Patch(ctx, b, types.MergePatchType, annotate, metav1.PatchOptions{})
			return err
		}, onA + "update Node " + b + ": an agent changes only the Node it runs on"},
		{"patch Node B's fencing condition", func() error {
			_, err := nodes.Patch(ctx, b, types.StrategicMergePatchType, fencingCond, metav1.PatchOptions{}, "status")
			return err
		}, onA + "update Node " + b + ": an agent changes only the Node it runs on"},
		{"patch Node A's Ready condition (the kubelet's)", func() error {
			_, err := nodes.Patch(ctx, a, types.StrategicMergePatchType, readyCond, metav1.PatchOptions{}, "status")
			return err
		}, onlyOwn},
		{"patch Node A's addresses (the kubelet's)", func() error {
			_, err := nodes.Patch(ctx, a, types.StrategicMergePatchType, addresses, metav1.PatchOptions{}, "status")
			return err
		}, onlyOwn},
		{"patch Node A's kubelet port (the kubelet's)", func() error {
			_, err := nodes.Patch(ctx, a, types.MergePatchType, endpoints, metav1.PatchOptions{}, "status")
			return err
		}, onlyOwn},
		{"create Lease C", func() error {
			_, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "restrict-c"}}, metav1.CreateOptions{})
			return err
		}, onA + "create Lease ferry-node-lease/restrict-c: an agent changes only the heartbeat of its own node"},
		{"update Lease B", func() error { return renewLease(ctx, agent, v1alpha2.FencingLeaseNamespace, b) }, onA + "update Lease ferry-node-lease/" + b},
		{"patch the guest-ready gate of pod vm-b on node B", func() error {
			_, err := pods.Patch(ctx, "vm-b", types.StrategicMergePatchType, gate, metav1.PatchOptions{}, "status")
			return err
		}, onA + "update the status of pod " + ns + "/vm-b, which is bound to node " + b + ": an agent changes only the pods of its own node"},
		{"patch pod vm-b on node B", func() error {
			_, err := pods.Patch(ctx, "vm-b", types.MergePatchType, []byte(`{"metadata":{"annotations":{"virtualization.ferryvm.io/run-dir":"/x"}}}`), metav1.PatchOptions{})
			return err
		}, onA + "update pod " + ns + "/vm-b, which is bound to node " + b},
		// The kubelet's part is not the agent's (RBAC).
		{"update Node A's status (the kubelet's)", func() error { return updateNodeStatus(ctx, nodes, a) }, `cannot update resource "nodes/status"`},
		{"create Node C (the kubelet registers nodes)", func() error {
			_, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "restrict-c"}}, metav1.CreateOptions{})
			return err
		}, `cannot create resource "nodes"`},
		{"create Lease A in kube-node-lease (the kubelet's heartbeat)", func() error {
			_, err := agent.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: a}}, metav1.CreateOptions{})
			return err
		}, `cannot create resource "leases"`},
		{"update the status of pod vm-a (the kubelet's)", func() error { return updatePodStatus(ctx, pods, "vm-a") }, `cannot update resource "pods/status"`},
		{"delete pod vm-a on node A (the kubelet finishes deletions)", func() error { return pods.Delete(ctx, "vm-a", metav1.DeleteOptions{}) }, `cannot delete resource "pods"`},
		{"delete Node A (RBAC: the agent deletes no Node)", func() error { return nodes.Delete(ctx, a, metav1.DeleteOptions{}) }, `cannot delete resource "nodes"`},
	} {
		err := c.call()
		switch {
		case c.refusal == "" && err != nil:
			t.Errorf("%s: refused: %v", c.what, err)
		case c.refusal == "":
			t.Logf("allowed: %s", c.what)
		case !refusedWith(err, c.refusal):
			t.Errorf("%s: got %v, want a refusal saying %q", c.what, err, c.refusal)
		default:
			t.Logf("refused: %s: %v", c.what, err)
		}
	}

	// A token that names no node (not bound to a Pod) may change no Node, Lease or pod.
	unbound, err := kubernetes.NewForConfig(configFor(tokenFor(t, "ferry-agent", nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = unbound.CoreV1().Nodes().Patch(ctx, a, types.MergePatchType, annotate, metav1.PatchOptions{})
	if !refusedWith(err, "ferry-agent's token names no node, so it may change no Node") {
		t.Errorf("patch Node A with a token bound to no Pod: got %v, want a refusal saying the token names no node", err)
	} else {
		t.Logf("refused: patch Node A with a token bound to no Pod: %v", err)
	}
}

// policiesTypeCheck type-checks the agent's policies as kube-controller-manager's policy
// status controller does (none runs here), against the server's schemas, and fails on any
// warning: an expression that does not fit the objects it reads.
func policiesTypeCheck(t *testing.T) {
	t.Helper()
	checker := &validating.TypeChecker{
		SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: adminCS.Discovery()},
		RestMapper:     admin.RESTMapper(),
	}
	for _, name := range []string{"ferry-agent-own-node", "ferry-agent-own-lease", "ferry-agent-own-pods", "ferry-controller-webhook-ca"} {
		var p admissionregistrationv1.ValidatingAdmissionPolicy
		if err := admin.Get(context.Background(), client.ObjectKey{Name: name}, &p); err != nil {
			t.Fatal(err)
		}
		for _, w := range checker.Check(&p) {
			t.Errorf("policy %s: %s: %s", name, w.FieldRef, w.Warning)
		}
		// The checker finds a field the objects lack: it did check.
		bad := p.DeepCopy()
		bad.Spec.Validations = append(bad.Spec.Validations, admissionregistrationv1.Validation{Expression: "oldObject.spec.noSuchField == ''"})
		if len(checker.Check(bad)) == 0 {
			t.Errorf("policy %s: the type checker missed an unknown field: it checked nothing", name)
		}
	}
}

func refusedWith(err error, msg string) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), msg)
}

func updateNodeStatus(ctx context.Context, nodes interface {
	Get(context.Context, string, metav1.GetOptions) (*corev1.Node, error)
	UpdateStatus(context.Context, *corev1.Node, metav1.UpdateOptions) (*corev1.Node, error)
}, name string) error {
	n, err := nodes.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "FerryAgentReady", LastHeartbeatTime: now, LastTransitionTime: now}}
	_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

func renewLease(ctx context.Context, cs kubernetes.Interface, namespace, name string) error {
	leases := cs.CoordinationV1().Leases(namespace)
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.NewMicroTime(time.Now())
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

func updatePodStatus(ctx context.Context, pods interface {
	Get(context.Context, string, metav1.GetOptions) (*corev1.Pod, error)
	UpdateStatus(context.Context, *corev1.Pod, metav1.UpdateOptions) (*corev1.Pod, error)
}, name string) error {
	p, err := pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "GuestBooting"})
	_, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}
