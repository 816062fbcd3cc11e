package controller_test

import (
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/controller/vm"
	"github.com/ferryvm/ferry/internal/ipam"
)

func getClass(t *testing.T, name string) *v1alpha2.VirtualMachineClass {
	t.Helper()
	c := &v1alpha2.VirtualMachineClass{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, c); err != nil {
		t.Fatal(err)
	}
	return c
}

func createClass(t *testing.T, c *v1alpha2.VirtualMachineClass) {
	t.Helper()
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, c) })
}

func vmCondition(t *testing.T, ns, name, typ string) *metav1.Condition {
	return meta.FindStatusCondition(getVM(t, ns, name).Status.Conditions, typ)
}

// The controller installs Deckhouse's generic class at its first start; it is Ready with
// the cluster's nodes available, and a VM that names no class gets it.
func TestGenericClassExists(t *testing.T) {
	ns := newNamespace(t)
	a, _ := migrationNodes(t, ns)
	eventually(t, timeout, "class generic Ready on "+a, func() (bool, string) {
		c := &v1alpha2.VirtualMachineClass{}
		if err := k8s.Get(ctx, client.ObjectKey{Name: "generic"}, c); err != nil {
			return false, err.Error()
		}
		// The node's size comes in a status update after the node: free memory then.
		free := c.Status.MaxAllocatableResources[corev1.ResourceMemory]
		return c.Status.Phase == v1alpha2.ClassPhaseReady && slices.Contains(c.Status.AvailableNodes, a) && !free.IsZero(),
			fmt.Sprintf("phase %s, nodes %v, free %v, conditions %+v", c.Status.Phase, c.Status.AvailableNodes, c.Status.MaxAllocatableResources, c.Status.Conditions)
	})
	c := getClass(t, "generic")
	if c.Spec.CPU.Type != v1alpha2.CPUTypeModel || c.Spec.CPU.Model != "Nehalem" || len(c.Spec.SizingPolicies) != 4 {
		t.Errorf("generic %+v; want Deckhouse's: Model Nehalem, 4 sizing policies", c.Spec)
	}

	makeImageDisk(t, ns, "root")
	if err := k8s.Create(ctx, newVM(ns, "plain", "root", "")); err != nil {
		t.Fatal(err)
	}
	// No CRD default fills the class in (it would hide from the mutating webhook, which
	// this controller does not run, that the VM names none): the VM is stored without
	// one, and is generic's.
	if got := getVM(t, ns, "plain").Spec.VirtualMachineClassName; got != "" {
		t.Errorf("a VM created without a class, no webhook running, has class %q; want none (the apiserver must not default it)", got)
	}
	pod := waitPod(t, ns, "plain")
	if args := strings.Join(pod.Spec.Containers[0].Args, " "); !strings.Contains(args, "--cpu-model Nehalem") {
		t.Errorf("launcher args %q lack --cpu-model Nehalem", args)
	}
	eventually(t, timeout, "VirtualMachineClassReady True", func() (bool, string) {
		c := vmCondition(t, ns, "plain", v1alpha2.VMConditionClassReady)
		return c != nil && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "Nehalem"), fmt.Sprintf("%+v", c)
	})
}

// A VM naming a class that does not exist is accepted but does not start; it starts once
// the class is made, with the class's CPU, placement and default coreFraction in its pod.
func TestVMWaitsForItsClassAndGetsItsCPUAndPlacement(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	name := "pinned-" + ns
	v := newVM(ns, "v", "root", "")
	v.Spec.VirtualMachineClassName = name
	v.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "vm", Effect: corev1.TaintEffectNoSchedule}}
	if err := k8s.Create(ctx, v); err != nil {
		t.Fatal(err)
	}
	eventually(t, timeout, "VirtualMachineClassReady False: not found", func() (bool, string) {
		c := vmCondition(t, ns, "v", v1alpha2.VMConditionClassReady)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha2.ReasonClassNotReady &&
			strings.Contains(c.Message, fmt.Sprintf("VirtualMachineClass %q not found", name)), fmt.Sprintf("%+v", c)
	})
	holdsFor(t, 2*time.Second, "no launcher pod while the class is missing", func() (bool, string) {
		n := len(livePods(t, ns, "v"))
		return n == 0, fmt.Sprintf("%d pods", n)
	})
	if c := vmCondition(t, ns, "v", v1alpha2.VMConditionRunning); c == nil || c.Reason != v1alpha2.ReasonClassNotReady {
		t.Errorf("Running %+v; want reason %s", c, v1alpha2.ReasonClassNotReady)
	}
	if c := vmCondition(t, ns, "v", v1alpha2.VMConditionSizingPolicyMatched); c == nil || c.Reason != v1alpha2.ReasonClassNotFound {
		t.Errorf("SizingPolicyMatched %+v; want False, %s", c, v1alpha2.ReasonClassNotFound)
	}

	createClass(t, &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha2.VirtualMachineClassSpec{
		CPU: v1alpha2.CPU{Type: v1alpha2.CPUTypeFeatures, Features: []string{"sse4_2", "popcnt"}},
		NodeSelector: v1alpha2.NodeSelector{MatchLabels: map[string]string{"zone": "x"},
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "gpu", Operator: corev1.NodeSelectorOpDoesNotExist}}},
		Tolerations: []corev1.Toleration{
			{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "class", Effect: corev1.TaintEffectNoSchedule},
			{Key: "vms", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
		},
		SizingPolicies: []v1alpha2.SizingPolicy{{Cores: &v1alpha2.SizingPolicyCores{Min: 1, Max: 2},
			CoreFractions: []v1alpha2.CoreFractionValue{25, 50}, DefaultCoreFraction: ptr.To(intstr.FromInt32(25))}},
	}})
	pod := waitPod(t, ns, "v")
	args := strings.Join(pod.Spec.Containers[0].Args, " ")
	if !strings.Contains(args, "--cpu-model qemu64 --cpu-features popcnt,sse4_2") {
		t.Errorf("launcher args %q lack the class's CPU", args)
	}
	terms := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 1 || !slices.ContainsFunc(terms[0].MatchExpressions, func(r corev1.NodeSelectorRequirement) bool {
		return r.Key == "zone" && r.Operator == corev1.NodeSelectorOpIn && slices.Equal(r.Values, []string{"x"})
	}) || !slices.ContainsFunc(terms[0].MatchExpressions, func(r corev1.NodeSelectorRequirement) bool { return r.Key == "gpu" }) {
		t.Errorf("pod's required node affinity %+v lacks the class's nodeSelector", terms)
	}
	if pod.Spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("the VM's own nodeSelector is gone: %v", pod.Spec.NodeSelector)
	}
	var values []string
	for _, tol := range pod.Spec.Tolerations {
		if tol.Key == "dedicated" || tol.Key == "vms" {
			values = append(values, tol.Key+"="+tol.Value)
		}
	}
	if !slices.Equal(values, []string{"dedicated=vm", "vms="}) {
		t.Errorf("tolerations %v; want the VM's dedicated (it has priority) and the class's vms", values)
	}
	// coreFraction: the class's default 25% of one core.
	if cpu := pod.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]; cpu.MilliValue() != 250 {
		t.Errorf("CPU request %s; want 250m (defaultCoreFraction 25%%)", cpu.String())
	}
	// The class sees no node with zone=x: Pending, and the VM says so, yet its pod is the
	// scheduler's to place.
	eventually(t, timeout, "VirtualMachineClassReady False: the class is Pending", func() (bool, string) {
		c := vmCondition(t, ns, "v", v1alpha2.VMConditionClassReady)
		return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "is Pending: "), fmt.Sprintf("%+v", c)
	})
}

// A VM outside its class's sizing policies (the class changed after it was made, or no
// webhook ran) shows SizingPolicyMatched False, and runs.
func TestSizingPolicyMismatchShows(t *testing.T) {
	ns := newNamespace(t)
	makeImageDisk(t, ns, "root")
	v := newVM(ns, "big", "root", "")
	v.Spec.CPU = v1alpha2.CPUSpec{Cores: 6, CoreFraction: "10%"}
	if err := k8s.Create(ctx, v); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ns, "big")
	eventually(t, timeout, "SizingPolicyMatched False", func() (bool, string) {
		c := vmCondition(t, ns, "big", v1alpha2.VMConditionSizingPolicyMatched)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha2.ReasonSizingPolicyNotMatched &&
			strings.Contains(c.Message, "set one of 20%, 50%, 100%"), fmt.Sprintf("%+v", c)
	})
}

// A migration's target pod is placed by the class as it is now.
func TestMigrationTargetHasTheClassPlacement(t *testing.T) {
	ns := newNamespace(t)
	nodeA, _ := migrationNodes(t, ns)
	name := "zoned-" + ns
	createClass(t, &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha2.VirtualMachineClassSpec{
		CPU: v1alpha2.CPU{Type: v1alpha2.CPUTypeModel, Model: "Nehalem"}}})
	makeImageDisk(t, ns, "d")
	v := newVM(ns, "m", "d", v1alpha2.AlwaysOn)
	v.Spec.VirtualMachineClassName = name
	if err := k8s.Create(ctx, v); err != nil {
		t.Fatal(err)
	}
	// The migration is left unfinished: deleting the VM ends it, and frees its slot.
	t.Cleanup(func() { deleteVM(t, ns, "m") })
	source := waitPod(t, ns, "m")
	runPod(t, &source, nodeA)
	waitPhase(t, ns, "m", v1alpha2.MachineRunning)
	// The class is placed on zone y after the VM started.
	class := getClass(t, name)
	class.Spec.NodeSelector.MatchLabels = map[string]string{"zone": "y"}
	if err := k8s.Update(ctx, class); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, newOp(ns, "ev", "m", v1alpha2.OpEvict)); err != nil {
		t.Fatal(err)
	}
	var target corev1.Pod
	eventually(t, timeout, "a migration target pod", func() (bool, string) {
		for _, p := range livePods(t, ns, "m") {
			if _, ok := p.Labels[v1alpha2.LabelMigrationTarget]; ok {
				target = p
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d live pods", len(livePods(t, ns, "m")))
	})
	terms := target.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	if len(terms) != 1 || !slices.ContainsFunc(terms[0].MatchExpressions, func(r corev1.NodeSelectorRequirement) bool {
		return r.Key == "zone" && slices.Equal(r.Values, []string{"y"})
	}) || !slices.ContainsFunc(terms[0].MatchExpressions, func(r corev1.NodeSelectorRequirement) bool { return r.Key == "kubernetes.io/hostname" }) {
		t.Errorf("target's required node affinity %+v; want the class's zone y and not the source node", terms)
	}
	if args := strings.Join(target.Spec.Containers[0].Args, " "); !strings.Contains(args, "--cpu-model Nehalem") {
		t.Errorf("target args %q: not the source's CPU", args)
	}
}

// Bad classes are refused with a message that says what to fix.
func TestBadClassesAreRefused(t *testing.T) {
	for _, c := range []struct {
		spec map[string]any
		want string
	}{
		{map[string]any{"cpu": map[string]any{"type": "Model"}}, "Model requires model (e.g. model: Nehalem)"},
		{map[string]any{"cpu": map[string]any{"type": "Features"}}, "Features requires features"},
		{map[string]any{"cpu": map[string]any{"type": "Host", "model": "Nehalem"}}, "HostPassthrough and Host cannot have model"},
		{map[string]any{"cpu": map[string]any{"type": "Model", "model": "Nehalem,+vmx"}}, "spec.cpu.model"},
		{map[string]any{"cpu": map[string]any{"type": "Features", "features": []any{"sse2=on"}}}, "spec.cpu.features[0]"},
		{map[string]any{"cpu": map[string]any{"type": "Host"}, "sizingPolicies": []any{
			map[string]any{"cores": map[string]any{"min": int64(1), "max": int64(4)}},
			map[string]any{"cores": map[string]any{"min": int64(4), "max": int64(8)}},
		}}, "the cores ranges [min; max] of the sizing policies overlap"},
		{map[string]any{"cpu": map[string]any{"type": "Host"}, "sizingPolicies": []any{
			map[string]any{"cores": map[string]any{"min": int64(4), "max": int64(2)}},
		}}, "The maximum must be greater than the minimum"},
		{map[string]any{"cpu": map[string]any{"type": "Host"}, "sizingPolicies": []any{
			map[string]any{"cores": map[string]any{"min": int64(1), "max": int64(2)}, "defaultCoreFraction": "Auto"},
		}}, "'Auto' needs Deckhouse's Vertical VirtualMachine Autoscaler"},
		{map[string]any{"cpu": map[string]any{"type": "Host"}, "sizingPolicies": []any{
			map[string]any{"cores": map[string]any{"min": int64(1), "max": int64(2)}, "coreFractions": []any{int64(50)}, "defaultCoreFraction": int64(20)},
		}}, "defaultCoreFraction must be one of coreFractions"},
	} {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "virtualization.deckhouse.io/v1alpha2", "kind": "VirtualMachineClass",
			"metadata": map[string]any{"generateName": "bad-"}, "spec": c.spec,
		}}
		err := k8s.Create(ctx, u)
		if err == nil {
			_ = k8s.Delete(ctx, u)
			t.Errorf("%v accepted; want %q", c.spec, c.want)
		} else if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v; want %q", c.spec, err, c.want)
		}
	}
	// cpu cannot change.
	ok := &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{GenerateName: "good-"}, Spec: v1alpha2.VirtualMachineClassSpec{CPU: v1alpha2.CPU{Type: v1alpha2.CPUTypeHost}}}
	createClass(t, ok)
	// A patch, not an update: the controller adds its finalizer meanwhile, and an update of
	// the stale class would be refused for that (a conflict) before any rule is checked.
	before := ok.DeepCopy()
	ok.Spec.CPU = v1alpha2.CPU{Type: v1alpha2.CPUTypeModel, Model: "Nehalem"}
	if err := k8s.Patch(ctx, ok, client.MergeFrom(before)); err == nil || !strings.Contains(err.Error(), ".spec.cpu is immutable") {
		t.Errorf("changing cpu: %v; want .spec.cpu is immutable", err)
	}
}

// The VM webhook, served here and registered for one labelled namespace, refuses a VM its
// class's sizing policies do not allow, naming the values that fit; a VM naming no existing
// class passes (it waits for its class).
func TestWebhookRefusesVMsOutsideTheSizingPolicy(t *testing.T) {
	r := ipam.MustParseRanges(ipam.DefaultRanges)
	hook := &webhook.Admission{Handler: &vm.Webhook{APIReader: k8s, Ranges: r, Decoder: admission.NewDecoder(controller.NewScheme())}}
	srv := httptest.NewTLSServer(hook)
	t.Cleanup(srv.Close)
	label := "ferry-test-vmclass-webhook"
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-", Labels: map[string]string{label: "on"}}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "ferry-test-" + ns.Name},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "vm.test.ferryvm.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(srv.URL + vm.WebhookPath),
				CABundle: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"virtualization.deckhouse.io"}, APIVersions: []string{"v1alpha2"}, Resources: []string{"virtualmachines"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{label: "on"}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
		}},
	}
	if err := k8s.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, cfg) })

	create := func(name, class string, cores int, fraction, memory string) error {
		v := newVM(ns.Name, name, "root", v1alpha2.AlwaysOff)
		v.Spec.VirtualMachineClassName = class
		v.Spec.CPU = v1alpha2.CPUSpec{Cores: cores, CoreFraction: fraction}
		v.Spec.Memory.Size = resource.MustParse(memory)
		return k8s.Create(ctx, v)
	}
	// The apiserver may take a moment to call a new webhook: wait for the first refusal.
	eventually(t, timeout, "the webhook refuses 30% of generic's 2 cores", func() (bool, string) {
		err := create("fraction", "generic", 2, "30%", "1Gi")
		if err == nil {
			_ = k8s.Delete(ctx, getVM(t, ns.Name, "fraction"))
			return false, "accepted"
		}
		return strings.Contains(err.Error(), `spec.cpu.coreFraction: 30% is not allowed by VirtualMachineClass "generic" for 1-4 cores; set one of 5%, 10%, 20%, 50%, 100%`), err.Error()
	})
	small := "small-" + ns.Name
	createClass(t, &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{Name: small}, Spec: v1alpha2.VirtualMachineClassSpec{
		CPU: v1alpha2.CPU{Type: v1alpha2.CPUTypeModel, Model: "Nehalem"},
		SizingPolicies: []v1alpha2.SizingPolicy{{Cores: &v1alpha2.SizingPolicyCores{Min: 1, Max: 4, Step: 2},
			Memory: &v1alpha2.SizingPolicyMemory{PerCore: &v1alpha2.SizingPolicyMemoryPerCore{MemoryMinMax: v1alpha2.MemoryMinMax{
				Min: ptr.To(resource.MustParse("512Mi")), Max: ptr.To(resource.MustParse("1Gi"))}}}}},
	}})
	for _, c := range []struct {
		name, class   string
		cores         int
		fraction, mem string
		want          string
	}{
		{"cores", small, 6, "", "1Gi", `spec.cpu.cores: 6 is not allowed by VirtualMachineClass "` + small + `", whose sizing policies allow 1-4 cores`},
		{"step", small, 2, "", "1Gi", "spec.cpu.cores: 2 is not allowed by VirtualMachineClass \"" + small + "\", which allows 1 to 4 cores in steps of 2; set 1 or 3"},
		{"memory", small, 3, "", "4Gi", "spec.memory.size: 4Gi is not allowed by VirtualMachineClass \"" + small + "\" for 3 cores (512Mi and 1Gi per core); set it between 1536Mi and 3Gi"},
		{"fits", small, 3, "", "2Gi", ""},
		{"missing-class", "no-such-" + ns.Name, 64, "1%", "1Gi", ""},
	} {
		err := create(c.name, c.class, c.cores, c.fraction, c.mem)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v; want a refusal with %q", c.name, err, c.want)
		}
	}
	// An update that leaves size and class alone is not checked again; one that changes the
	// size is.
	patch := func(p string) error {
		return k8s.Patch(ctx, getVM(t, ns.Name, "fits"), client.RawPatch("application/merge-patch+json", []byte(p)))
	}
	if err := patch(`{"spec":{"runPolicy":"Manual"}}`); err != nil {
		t.Errorf("an update of the runPolicy refused: %v", err)
	}
	if err := patch(`{"spec":{"memory":{"size":"8Gi"}}}`); err == nil || !strings.Contains(err.Error(), "spec.memory.size: 8Gi is not allowed") {
		t.Errorf("memory raised beyond the policy: %v", err)
	}
}
