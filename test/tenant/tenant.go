// Package tenant is the tenant-isolation suite of docs/threat-model.md: every way out of its
// namespace that a user with Kubernetes' built-in `edit` role there has against Ferry, each
// tried with that user's own ServiceAccount token. Each must be refused, or be harmless and
// say so. test/e2e runs it on `ferry up` (the stand-in kubelet, deploy/base's tenant policy
// and roles), test/realkubelet on deploy/base as installed on real kubelets.
package tenant

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
)

// Namespace is the tenant's namespace, at Pod Security level restricted.
const Namespace = "tenant-mallory"

// Env is the cluster the suite runs on.
type Env struct {
	// Admin is a cluster administrator's client configuration.
	Admin *rest.Config
	// Image is a Ready ClusterVirtualImage the tenant's VM boots from.
	Image string
	// StandIn is set on `ferry up`'s stand-in kubelet, which runs pods as the node's
	// processes: a pod the tenant binds to a node must fail there, never run.
	StandIn bool
	// Node is a node the tenant binds a pod to (StandIn).
	Node string
}

// Run sets up the tenant (namespace, ServiceAccount bound to `edit`, a VM of its own made
// with its own token), tries every attack, and checks the VM ran on untouched throughout.
func Run(t *testing.T, env Env) {
	ctx := context.Background()
	admin := mustClient(t, env.Admin)
	mallory := setUp(t, ctx, admin, env.Admin)
	ctl := mustClient(t, mallory)
	cs := kubernetes.NewForConfigOrDie(mallory)

	// The tenant runs a VM of its own, as `edit` allows.
	disk := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: "own-root", Namespace: Namespace},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
			ObjectRef: &v1alpha2.ObjectRefSource{Kind: "ClusterVirtualImage", Name: env.Image}}}}
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "own", Namespace: Namespace},
		Spec: v1alpha2.VirtualMachineSpec{
			CPU:             v1alpha2.CPUSpec{Cores: 1},
			Memory:          v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
			BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: "VirtualDisk", Name: "own-root"}},
		}}
	for _, o := range []client.Object{disk, vm} {
		if err := ctl.Create(ctx, o); err != nil {
			t.Fatalf("the tenant, with edit, cannot create its %T: %v", o, err)
		}
	}
	t.Cleanup(func() { deleteVM(t, admin, "own") })
	pod := waitRunning(t, admin, "own")
	t.Logf("the tenant's VM runs on %s in pod %s", pod.Spec.NodeName, pod.Name)

	// Refused: Ferry's commands to its nodes, on the tenant's own launcher pod.
	refusedPatch := func(name string, patch map[string]any, want string) {
		t.Helper()
		b, _ := json.Marshal(patch)
		_, err := cs.CoreV1().Pods(Namespace).Patch(ctx, pod.Name, types.MergePatchType, b, metav1.PatchOptions{})
		expectRefused(t, name, err, want)
	}
	req, _ := json.Marshal(v1alpha2.MigrationRequest{URI: "tcp:127.0.0.1:9", TargetNode: "node-evil"})
	t.Run("MigrateToAnyAddress", func(t *testing.T) {
		refusedPatch("annotation "+v1alpha2.AnnotationMigrateTo, annotations(v1alpha2.AnnotationMigrateTo, string(req)), "only Ferry's controller and node agents change them")
	})
	t.Run("AbortMigration", func(t *testing.T) {
		refusedPatch("annotation "+v1alpha2.AnnotationMigrationAbort, annotations(v1alpha2.AnnotationMigrationAbort, "true"), "only Ferry's controller and node agents change them")
	})
	t.Run("FakeIncomingAddress", func(t *testing.T) {
		refusedPatch("annotation "+v1alpha2.AnnotationIncomingURI, annotations(v1alpha2.AnnotationIncomingURI, "tcp:127.0.0.1:9"), "only Ferry's controller and node agents change them")
	})
	t.Run("HotplugHostFile", func(t *testing.T) {
		// A disk hot-plugged from the node's files: the request is the VM controller's only.
		hp, _ := json.Marshal([]v1alpha2.HotplugDevice{{Slot: 31, Name: "shadow", Path: "/etc/shadow", Format: "raw"}})
		refusedPatch("annotation "+v1alpha2.AnnotationHotplug, annotations(v1alpha2.AnnotationHotplug, string(hp)), "only Ferry's controller and node agents change them")
		refusedPatch("annotation "+v1alpha2.AnnotationHotplugStatus, annotations(v1alpha2.AnnotationHotplugStatus, "[]"), "only Ferry's controller and node agents change them")
	})
	t.Run("UnlabelLauncher", func(t *testing.T) {
		refusedPatch("removing label "+v1alpha2.LabelLauncher, map[string]any{"metadata": map[string]any{"labels": map[string]any{v1alpha2.LabelLauncher: nil}}}, "only Ferry's controller and node agents change them")
	})

	// Refused: pods that pass for a VM's.
	fakeTarget := plainPod("fake-target")
	fakeTarget.Labels = map[string]string{v1alpha2.LabelVMName: "own", v1alpha2.LabelLauncher: "virt-launcher", v1alpha2.LabelMigrationTarget: "evict-own"}
	fakeTarget.Annotations = map[string]string{v1alpha2.AnnotationIncomingURI: "tcp:10.0.0.1:4444"}
	owned := plainPod("owned")
	owned.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1alpha2.GroupVersion.String(), Kind: "VirtualMachine", Name: "own", UID: vmUID(t, admin, "own"), Controller: ptr.To(true)}}
	kvm := plainPod("kvm")
	kvm.Spec.Containers[0].Resources.Limits = corev1.ResourceList{"devices.virtualization.ferryvm.io/kvm": resource.MustParse("1")}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"FakeMigrationTarget", fakeTarget, "only Ferry's controller creates pods that run VMs"},
		{"PodOwnedByTheVM", owned, "only Ferry's controller creates pods that run VMs"},
		{"FerryDevices", kvm, "only Ferry's controller creates pods that use Ferry's devices"},
		{"PrivilegedPod", privilegedPod(), "violates PodSecurity"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := cs.CoreV1().Pods(Namespace).Create(ctx, c.pod, metav1.CreateOptions{})
			expectRefused(t, "pod "+c.pod.Name, err, c.want)
		})
	}

	// Refused by RBAC: status, which nodes and the controller write; cluster objects.
	t.Run("WriteVMStatus", func(t *testing.T) {
		b, _ := json.Marshal(map[string]any{"status": map[string]any{"phase": "Stopped"}})
		err := ctl.Status().Patch(ctx, &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "own", Namespace: Namespace}}, client.RawPatch(types.MergePatchType, b))
		expectRefused(t, "VM status", err, "virtualmachines/status")
	})
	t.Run("WriteGuestReady", func(t *testing.T) {
		b, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []any{map[string]any{"type": v1alpha2.PodConditionGuestReady, "status": "True"}}}})
		_, err := cs.CoreV1().Pods(Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, b, metav1.PatchOptions{}, "status")
		expectRefused(t, "pod status", err, "pods/status")
	})
	t.Run("ImageFromHostFile", func(t *testing.T) {
		img := &v1alpha2.ClusterVirtualImage{ObjectMeta: metav1.ObjectMeta{Name: "mallory-shadow"},
			Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: "file:///etc/shadow"}}}}
		expectRefused(t, "ClusterVirtualImage", ctl.Create(ctx, img), "clustervirtualimages")
	})
	// Harmless: a disk whose URL points into the cluster (a cloud's metadata service, the
	// apiserver): the controller fails it, saying why, and connects nowhere.
	t.Run("DiskFromClusterAddresses", func(t *testing.T) {
		api, err := url.Parse(env.Admin.Host)
		if err != nil {
			t.Fatal(err)
		}
		urls := map[string]string{"metadata": "http://169.254.169.254/latest/meta-data/"}
		if ip := net.ParseIP(api.Hostname()); env.StandIn || (ip != nil && ip.IsLoopback()) {
			// ferry up denies its apiserver's address (on the nodes' bridge, or loopback);
			// on a real cluster, a loopback address is the controller pod's own, denied too.
			urls["apiserver"] = "http://" + api.Host + "/version"
		}
		for name, u := range urls {
			vd := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: "stolen-" + name, Namespace: Namespace},
				Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: u}}}}
			if err := ctl.Create(ctx, vd); err != nil {
				t.Fatalf("the tenant cannot create a disk from %s: %v", u, err)
			}
		}
		for name, u := range urls {
			var msg string
			err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				var vd v1alpha2.VirtualDisk
				if err := ctl.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "stolen-" + name}, &vd); err != nil {
					return false, nil
				}
				if c := meta.FindStatusCondition(vd.Status.Conditions, v1alpha2.ImageConditionReady); c != nil {
					msg = c.Message
				}
				return vd.Status.Phase == v1alpha2.ImageFailed, nil
			})
			if err != nil || !strings.Contains(msg, "the controller does not connect to") {
				t.Errorf("disk from %s: not failed for its address within a minute (%v): %q", u, err, msg)
				continue
			}
			t.Logf("disk from %s: %s", u, msg)
		}
	})
	t.Run("CordonANode", func(t *testing.T) {
		_, err := cs.CoreV1().Nodes().Patch(ctx, pod.Spec.NodeName, types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{})
		expectRefused(t, "node", err, "nodes")
	})
	t.Run("ForgeNodeHeartbeat", func(t *testing.T) {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: pod.Spec.NodeName, Namespace: v1alpha2.FencingLeaseNamespace}}
		_, err := cs.CoordinationV1().Leases(v1alpha2.FencingLeaseNamespace).Update(ctx, l, metav1.UpdateOptions{})
		expectRefused(t, "node Lease", err, "leases")
	})
	t.Run("OtherNamespacesVMs", func(t *testing.T) {
		var list v1alpha2.VirtualMachineList
		expectRefused(t, "VMs of default", ctl.List(ctx, &list, client.InNamespace("default")), "virtualmachines")
		op := &v1alpha2.VirtualMachineOperation{ObjectMeta: metav1.ObjectMeta{Name: "mallory", Namespace: "default"},
			Spec: v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: "linux-vm"}}
		expectRefused(t, "operation in default", ctl.Create(ctx, op), "virtualmachineoperations")
	})
	t.Run("MigrationCA", func(t *testing.T) {
		_, err := cs.CoreV1().Secrets("ferry-system").List(ctx, metav1.ListOptions{})
		expectRefused(t, "secrets of ferry-system", err, "secrets")
	})
	if env.StandIn {
		// Harmless: a pod bound to a node by hand, as restricted allows, that would run
		// one of Ferry's commands as root on the stand-in's node. The node refuses it.
		t.Run("FerryCommandOnANode", func(t *testing.T) {
			p := plainPod("ferry-controller")
			p.Spec.NodeName = env.Node
			p.Spec.Containers[0].Command = []string{"ferry"}
			p.Spec.Containers[0].Args = []string{"controller", "--kubeconfig", "/dev/null"}
			if _, err := cs.CoreV1().Pods(Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Fatalf("restricted admits this pod, yet: %v", err)
			}
			var got *corev1.Pod
			err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
				var err error
				got, err = cs.CoreV1().Pods(Namespace).Get(ctx, p.Name, metav1.GetOptions{})
				return err == nil && got.Status.Phase == corev1.PodFailed, nil
			})
			if err != nil {
				t.Fatalf("pod not failed by node %s within a minute: %+v", env.Node, got.Status)
			}
			if !strings.Contains(got.Status.Message, "runs only Ferry's launcher pods") {
				t.Errorf("pod failed with %q, want the node to say it runs only Ferry's launcher pods", got.Status.Message)
			}
			t.Logf("node %s: %s", env.Node, got.Status.Message)
		})
	}

	// The VM ran on through all of it, in the same pod.
	after := waitRunning(t, admin, "own")
	if after.Name != pod.Name || after.Spec.NodeName != pod.Spec.NodeName {
		t.Errorf("the tenant's VM moved: pod %s on %s, was %s on %s", after.Name, after.Spec.NodeName, pod.Name, pod.Spec.NodeName)
	}
	for _, k := range []string{v1alpha2.AnnotationMigrateTo, v1alpha2.AnnotationMigrationAbort, v1alpha2.AnnotationIncomingURI} {
		if v, ok := after.Annotations[k]; ok {
			t.Errorf("pod %s has %s=%s after the attacks", after.Name, k, v)
		}
	}
	if v := after.Annotations[v1alpha2.AnnotationHotplug]; v != "[]" {
		t.Errorf("pod %s has %s=%s after the attacks, want []", after.Name, v1alpha2.AnnotationHotplug, v)
	}
}

// setUp makes the tenant's namespace (restricted), its ServiceAccount bound to `edit`, and
// returns a client configuration with that account's token only.
func setUp(t *testing.T, ctx context.Context, admin client.Client, adminCfg *rest.Config) *rest.Config {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "mallory", Namespace: Namespace}}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "mallory-edit", Namespace: Namespace},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "mallory", Namespace: Namespace}}}
	for _, o := range []client.Object{ns, sa, rb} {
		if err := admin.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %T: %v", o, err)
		}
	}
	t.Cleanup(func() { _ = admin.Delete(context.Background(), ns) })
	tr, err := kubernetes.NewForConfigOrDie(adminCfg).CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, "mallory",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for mallory: %v", err)
	}
	cfg := rest.AnonymousClientConfig(adminCfg)
	cfg.BearerToken = tr.Status.Token
	// The aggregated roles reach `edit` a moment after the policy objects are applied.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var list v1alpha2.VirtualMachineList
		return mustClient(t, cfg).List(ctx, &list, client.InNamespace(Namespace)) == nil, nil
	})
	if err != nil {
		t.Fatalf("edit does not let mallory list VMs in %s: Ferry's roles are not aggregated to edit", Namespace)
	}
	return cfg
}

func mustClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: controller.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// expectRefused fails unless err is the API's refusal and says want.
func expectRefused(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: the tenant's write was accepted", what)
	case !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		t.Errorf("%s: %v, want a refusal (Forbidden)", what, err)
	case !strings.Contains(err.Error(), want):
		t.Errorf("%s: refused with %q, want it to say %q", what, err, want)
	default:
		t.Logf("%s refused: %v", what, err)
	}
}

func annotations(k, v string) map[string]any {
	return map[string]any{"metadata": map[string]any{"annotations": map[string]any{k: v}}}
}

// plainPod is a pod Pod Security's restricted level admits.
func plainPod(name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace}, Spec: corev1.PodSpec{
		RestartPolicy:   corev1.RestartPolicyNever,
		SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](1000), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		Containers: []corev1.Container{{Name: "c", Image: "ferryvm/ferry:0.2.0", Command: []string{"sleep", "3600"},
			SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
	}}
}

// privilegedPod is what a launcher pod needs and a tenant must not have: the node's network,
// a host path, NET_ADMIN.
func privilegedPod() *corev1.Pod {
	p := plainPod("hostile")
	p.Spec.HostNetwork = true
	p.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
	p.Spec.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "root", MountPath: "/host"}}
	return p
}

func vmUID(t *testing.T, c client.Client, name string) types.UID {
	t.Helper()
	var vm v1alpha2.VirtualMachine
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: Namespace, Name: name}, &vm); err != nil {
		t.Fatal(err)
	}
	return vm.UID
}

// waitRunning waits for the VM to run and returns its pod.
func waitRunning(t *testing.T, c client.Client, name string) *corev1.Pod {
	t.Helper()
	var vm v1alpha2.VirtualMachine
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, &vm)
		return err == nil && vm.Status.Phase == v1alpha2.MachineRunning && len(vm.Status.VirtualMachinePods) > 0, nil
	})
	if err != nil {
		t.Fatalf("VM %s/%s not Running within 3 minutes: phase %s", Namespace, name, vm.Status.Phase)
	}
	var pod corev1.Pod
	active := vm.Status.VirtualMachinePods[0].Name
	for _, p := range vm.Status.VirtualMachinePods {
		if p.Active {
			active = p.Name
		}
	}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: Namespace, Name: active}, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}

// deleteVM removes the tenant's VM and waits until it is gone, so its guest does not load
// the tests that follow.
func deleteVM(t *testing.T, c client.Client, name string) {
	ctx := context.Background()
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace}}
	_ = c.Delete(ctx, vm)
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		return apierrors.IsNotFound(c.Get(ctx, client.ObjectKeyFromObject(vm), vm)), nil
	})
	if err != nil {
		t.Errorf("VM %s/%s not deleted within 2 minutes", Namespace, name)
	}
	_ = c.Delete(ctx, &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Name: name + "-root", Namespace: Namespace}})
}
