package deploy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
	"github.com/ferryvm/ferry/internal/testenv"
)

// The cluster of TestUpgradeFromPreviousReleaseAndUninstall: ferry up's embedded control
// plane (with kube-controller-manager: garbage collection and namespace deletion, which an
// uninstall needs) on this port, without its controller and webhooks, and with none of
// its CRDs once the test starts: a cluster that ran the previous release.
const upgradePort = 19843

// immutable are the fields of deploy/base's objects that the apiserver refuses to change
// (or that the cluster set and an apply must keep): an upgrade by apply must leave them.
var immutable = map[string][][]string{
	"Deployment":               {{"spec", "selector"}},
	"DaemonSet":                {{"spec", "selector"}},
	"Service":                  {{"spec", "clusterIP"}, {"spec", "clusterIPs"}},
	"Secret":                   {{"type"}},
	"RoleBinding":              {{"roleRef"}},
	"ClusterRoleBinding":       {{"roleRef"}},
	"CustomResourceDefinition": {{"spec", "group"}, {"spec", "scope"}, {"spec", "names", "kind"}, {"spec", "names", "plural"}},
}

// TestUpgradeFromPreviousReleaseAndUninstall: on a cluster that runs the previous release
// (testdata/previous-release.yaml, deploy/base as it was, applied server-side as its
// README said), `kubectl apply --server-side -k deploy/base` works: no error, no conflict,
// every object kept (same UID) with its immutable fields, every object of the previous
// release still in this one. Then the uninstall, with a VM, a disk and an image in the
// cluster:
//   - `ferry uninstall` with the controller running, then `kubectl delete -k deploy/base
//     --ignore-not-found`: everything goes, nothing hangs; the VM's launcher pod is gone,
//     the disk's and the image's files stay in the storage;
//   - installed again, with the controller gone first and `kubectl delete -k` run straight
//     away, the CRDs hang in Terminating (Ferry's finalizers); `ferry uninstall --force`
//     ends that.
func TestUpgradeFromPreviousReleaseAndUninstall(t *testing.T) {
	bin := ferryBin(t)
	ctx := context.Background()
	dir := t.TempDir()
	f := &flows{t: t, bin: bin, dir: dir, upDir: filepath.Join(dir, "up")}
	// A cluster of the previous release has its CRDs, not this one's: ferry up installs none
	// (--no-crds). (It used to install them and the test deleted them, which on a loaded
	// machine took minutes: the apiserver's CRD finalizer met "storage is (re)initializing"
	// and backed off.)
	f.start("up", "--state-dir", f.upDir, "up", "--nodes", "0", "--netns=false", "--sample-vm=false", "--no-controller", "--no-crds",
		"--port", strconv.Itoa(upgradePort), "--ip-range", "10.82.0.0/24", "--fencing-profile", "off")
	f.connectUp()
	var crds apiextensionsv1.CustomResourceDefinitionList
	if err := f.admin.List(ctx, &crds); err != nil || len(crds.Items) != 0 {
		t.Fatalf("ferry up --no-crds: %d CRDs, %v", len(crds.Items), err)
	}

	kubectl := func(args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--state-dir", f.upDir, "k"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	base := filepath.Join(testenv.RepoRoot(), "deploy", "base")

	// The previous release, as its README said to install it.
	prevFile := filepath.Join(testenv.RepoRoot(), "test", "deploy", "testdata", "previous-release.yaml")
	if out, err := kubectl("apply", "--server-side", "-f", prevFile); err != nil {
		t.Fatalf("applying the previous release: %v\n%s", err, out)
	}
	previous := readObjects(t, prevFile)
	current := manifests(t)
	// An address lease as the previous release made them: its spec named the VM, a field
	// this release's schema has not; the label with the VM's UID is how this release's
	// controller finds the VM, whose own VirtualMachineIPAddress takes the lease over.
	const legacyUID = "3f1e9a52-0d3c-4e8e-9a51-upgrade-test"
	oldLease := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "virtualization.deckhouse.io/v1alpha2", "kind": "VirtualMachineIPAddressLease",
		"metadata": map[string]any{"name": "ip-10-82-0-77", "labels": map[string]any{v1alpha2.LabelLegacyLeaseHolder: legacyUID}},
		"spec":     map[string]any{"virtualMachineRef": map[string]any{"namespace": "upgrade-vms", "name": "gone", "uid": legacyUID}},
	}}
	if err := f.admin.Create(ctx, oldLease); err != nil {
		t.Fatalf("a lease of the previous release: %v", err)
	}
	before := map[string]*unstructured.Unstructured{}
	for _, u := range previous {
		before[describe(u)] = f.live(u)
	}

	// Its immutable fields, as the manifests say them: this release must not change one.
	inCurrent := map[string]*unstructured.Unstructured{}
	for _, u := range current {
		inCurrent[describe(u)] = u
	}
	for _, p := range previous {
		c := inCurrent[describe(p)]
		if c == nil {
			t.Errorf("%s of the previous release is not in this one: an upgrade by apply leaves it behind (say so in the upgrade notes, or keep it)", describe(p))
			continue
		}
		for _, path := range immutable[p.GetKind()] {
			pv, pok, _ := unstructured.NestedFieldNoCopy(p.Object, path...)
			cv, cok, _ := unstructured.NestedFieldNoCopy(c.Object, path...)
			if pok && cok && !reflect.DeepEqual(pv, cv) {
				t.Errorf("%s: %s is %v, was %v in the previous release: the apiserver refuses the change", describe(p), strings.Join(path, "."), cv, pv)
			}
		}
	}

	// The upgrade.
	start := time.Now()
	out, err := kubectl("apply", "--server-side", "-k", base)
	if err != nil {
		t.Fatalf("kubectl apply --server-side -k deploy/base over the previous release: %v\n%s", err, out)
	}
	t.Logf("upgraded by kubectl apply --server-side -k deploy/base in %.1fs: %d objects", time.Since(start).Seconds(), len(current))
	for _, u := range previous {
		was, now := before[describe(u)], f.live(u)
		if now.GetUID() != was.GetUID() {
			t.Errorf("%s was replaced (UID %s, was %s)", describe(u), now.GetUID(), was.GetUID())
		}
		for _, path := range immutable[u.GetKind()] {
			wv, _, _ := unstructured.NestedFieldNoCopy(was.Object, path...)
			nv, _, _ := unstructured.NestedFieldNoCopy(now.Object, path...)
			if !reflect.DeepEqual(wv, nv) {
				t.Errorf("%s: %s changed from %v to %v", describe(u), strings.Join(path, "."), wv, nv)
			}
		}
	}
	// This release's objects are in force: the agent finds its watchdog itself, with no
	// device volume left over from the previous release's manifest: its volumes are this
	// release's, no more.
	desired := manifest(t, "DaemonSet", "ferry-agent")
	ds := f.live(desired)
	var args []string
	containers, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
	if len(containers) > 0 {
		args, _, _ = unstructured.NestedStringSlice(containers[0].(map[string]any), "args")
	}
	volumeNames := func(u *unstructured.Unstructured) []string {
		volumes, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "volumes")
		var names []string
		for _, v := range volumes {
			names = append(names, v.(map[string]any)["name"].(string))
		}
		slices.Sort(names)
		return names
	}
	if got, want := volumeNames(ds), volumeNames(desired); !slices.Contains(args, "--watchdog=auto") || !slices.Equal(got, want) {
		t.Errorf("the upgraded DaemonSet has args %v and volumes %v, want --watchdog=auto and this release's volumes %v", args, got, want)
	}

	// The lease is still there, its label kept.
	var lease v1alpha2.VirtualMachineIPAddressLease
	if err := f.admin.Get(ctx, client.ObjectKey{Name: "ip-10-82-0-77"}, &lease); err != nil || lease.UID != oldLease.GetUID() || lease.Labels[v1alpha2.LabelLegacyLeaseHolder] != legacyUID {
		t.Errorf("the previous release's lease after the upgrade: %v, UID %s (was %s), labels %v", err, lease.UID, oldLease.GetUID(), lease.Labels)
	}

	// A controller on its own token (its Pods cannot run here: no node), serving the
	// webhooks, which deploy/base's configurations call by URL.
	ctrl := f.upgradeController("controller-1")
	f.waitControllerLeads()
	// Its VM is gone: the lease is Released (and deleted after the retention time).
	eventually(t, 30*time.Second, "the previous release's lease of a gone VM Released", func() (bool, string) {
		err := f.admin.Get(ctx, client.ObjectKey{Name: "ip-10-82-0-77"}, &lease)
		return err == nil && lease.Status.Phase == v1alpha2.VirtualMachineIPAddressLeasePhaseReleased, fmt.Sprintf("%v %s", err, lease.Status.Phase)
	})
	ns := "upgrade-vms"
	if err := f.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	files := f.makeVM(ns, "a")

	start = time.Now()
	b, err := exec.Command(bin, "--state-dir", f.upDir, "uninstall", "--timeout", "90s").CombinedOutput()
	t.Logf("ferry uninstall (%.1fs):\n%s", time.Since(start).Seconds(), b)
	if err != nil {
		t.Fatalf("ferry uninstall: %v", err)
	}
	f.checkUninstalled(ns, files)
	start = time.Now()
	if out, err := kubectl("delete", "-k", base, "--ignore-not-found", "--timeout", "90s"); err != nil {
		t.Fatalf("kubectl delete -k deploy/base after ferry uninstall: %v\n%s", err, out)
	}
	t.Logf("kubectl delete -k deploy/base --ignore-not-found after ferry uninstall: %.1fs", time.Since(start).Seconds())
	f.checkGone(current)
	f.stop(ctrl)
	// The controller released the disk and the image because their CRDs were being
	// deleted (it may read them by name), not by chance.
	for _, l := range f.logNames() {
		if !strings.Contains(filepath.Base(l), ctrl) {
			continue
		}
		b, _ := os.ReadFile(l)
		for _, want := range []string{"The VirtualDisk CRD is being deleted: releasing the disk, its file is kept", "The ClusterVirtualImage CRD is being deleted"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s does not say %q", filepath.Base(l), want)
			}
		}
	}

	// Again, uninstalled the wrong way round: the controller goes first (its pod ends
	// with its namespace) and kubectl deletes the CRDs with objects in them.
	if out, err := kubectl("apply", "--server-side", "-k", base); err != nil {
		t.Fatalf("installing again: %v\n%s", err, out)
	}
	ctrl = f.upgradeController("controller-2")
	f.waitControllerLeads()
	files = f.makeVM(ns, "b")
	f.stop(ctrl)
	if out, err := kubectl("delete", "-k", base, "--wait=false"); err != nil {
		t.Fatalf("kubectl delete -k deploy/base --wait=false: %v\n%s", err, out)
	}
	holdsFor(t, 3*time.Second, "the CRDs hang in Terminating on Ferry's finalizers", func() (bool, string) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		err := f.admin.Get(ctx, client.ObjectKey{Name: uninstall.CRDVirtualMachines}, crd)
		return err == nil && crd.DeletionTimestamp != nil, fmt.Sprintf("%v, deleted at %v", err, crd.DeletionTimestamp)
	})
	b, err = exec.Command(bin, "--state-dir", f.upDir, "uninstall", "--timeout", "30s").CombinedOutput()
	if err == nil || !strings.Contains(string(b), "--force") {
		t.Errorf("ferry uninstall without a controller: %v, want a refusal that names --force\n%s", err, b)
	}
	start = time.Now()
	b, err = exec.Command(bin, "--state-dir", f.upDir, "uninstall", "--force", "--timeout", "30s").CombinedOutput()
	t.Logf("ferry uninstall --force (%.1fs):\n%s", time.Since(start).Seconds(), b)
	if err != nil {
		t.Fatalf("ferry uninstall --force: %v", err)
	}
	f.checkUninstalled(ns, files)
	if out, err := kubectl("delete", "-k", base, "--ignore-not-found", "--timeout", "90s"); err != nil {
		t.Fatalf("kubectl delete -k deploy/base after ferry uninstall --force: %v\n%s", err, out)
	}
	f.checkGone(current)
}

// readObjects reads the objects of a multi-document YAML file.
func readObjects(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := d.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				break
			}
			t.Fatal(err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no objects in %s", path)
	}
	return out
}

// live reads the object u names from the cluster.
func (f *flows) live(u *unstructured.Unstructured) *unstructured.Unstructured {
	f.t.Helper()
	got := &unstructured.Unstructured{}
	got.SetGroupVersionKind(u.GroupVersionKind())
	if err := f.admin.Get(context.Background(), client.ObjectKeyFromObject(u), got); err != nil {
		f.t.Fatalf("%s: %v", describe(u), err)
	}
	return got
}

// upgradeController starts `ferry controller` on a fresh token of its ServiceAccount and
// points deploy/base's webhook configurations at it.
func (f *flows) upgradeController(name string) string {
	f.t.Helper()
	kc := filepath.Join(f.dir, name+".kubeconfig")
	writeKubeconfig(f.t, kc, f.adminCfg, f.token("ferry-controller", nil))
	pki := filepath.Join(f.upDir, "control-plane", "pki")
	webhookPort := upgradePort + 2020
	f.start(name, "controller", "--kubeconfig", kc, "--leader-elect", "--leader-election-namespace", namespace,
		"--storage-dir", filepath.Join(f.dir, "storage"), "--ip-range", "10.82.0.0/24", "--vm-network", "none",
		"--image-source-dirs", f.dir, // makeVM's image files
		"--launcher-image", "ferryvm/ferry:0.2.0",
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", upgradePort+2010),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", upgradePort+2011),
		"--webhook-host", "127.0.0.1", "--webhook-port", strconv.Itoa(webhookPort),
		"--webhook-cert-dir", pki, "--webhook-cert-name", "webhook.crt", "--webhook-key-name", "webhook.key")
	ca := f.adminCfg.CAData
	if len(ca) == 0 {
		var err error
		if ca, err = os.ReadFile(f.adminCfg.CAFile); err != nil {
			f.t.Fatal(err)
		}
	}
	for _, cfg := range []client.Object{
		&admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "ferry-eviction"}},
		&admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "ferry-virtualmachine"}},
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "ferry-virtualmachine"}},
	} {
		if err := f.admin.Get(context.Background(), client.ObjectKeyFromObject(cfg), cfg); err != nil {
			f.t.Fatal(err)
		}
		for _, cc := range clientConfigsOf(cfg) {
			if cc.Service != nil {
				url := fmt.Sprintf("https://127.0.0.1:%d%s", webhookPort, *cc.Service.Path)
				cc.Service, cc.URL = nil, &url
			}
			cc.CABundle = ca
		}
		if err := f.admin.Update(context.Background(), cfg); err != nil {
			f.t.Fatal(err)
		}
	}
	return name
}

func (f *flows) waitControllerLeads() {
	f.t.Helper()
	eventually(f.t, 60*time.Second, "the controller leads", func() (bool, string) {
		var l coordinationv1.Lease
		if err := f.admin.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: "ferry-controller"}, &l); err != nil {
			return false, err.Error()
		}
		fresh := l.Spec.RenewTime != nil && time.Since(l.Spec.RenewTime.Time) < 5*time.Second
		return l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" && fresh, fmt.Sprintf("holder %v renewed %v", l.Spec.HolderIdentity, l.Spec.RenewTime)
	})
}

// stop ends one process the test started (SIGTERM) and waits for it.
func (f *flows) stop(name string) {
	f.t.Helper()
	f.mu.Lock()
	cmd, done := f.procs[name], f.done[name]
	f.mu.Unlock()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		f.t.Fatalf("%s did not stop within 30s", name)
	}
}

// vmFiles are the storage files of makeVM's image and disk, and its launcher pod.
type vmFiles struct {
	image, disk string
	pod         string
}

// makeVM creates an image, a disk made from it and an AlwaysOn VM of it, and waits until
// the controller holds them by its finalizers and has made the VM's launcher pod.
func (f *flows) makeVM(ns, suffix string) vmFiles {
	f.t.Helper()
	ctx := context.Background()
	raw := filepath.Join(f.dir, "image-"+suffix+".raw")
	b := make([]byte, 1<<20)
	b[510], b[511] = 0x55, 0xAA
	if err := os.WriteFile(raw, b, 0o644); err != nil {
		f.t.Fatal(err)
	}
	img := &v1alpha2.ClusterVirtualImage{ObjectMeta: metav1.ObjectMeta{Name: "upgrade-" + suffix},
		Spec: v1alpha2.ClusterVirtualImageSpec{DataSource: v1alpha2.DataSource{Type: v1alpha2.SourceHTTP, HTTP: &v1alpha2.HTTPSource{URL: "file://" + raw}}}}
	disk := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "disk-" + suffix},
		Spec: v1alpha2.VirtualDiskSpec{DataSource: &v1alpha2.DataSource{Type: v1alpha2.SourceObjectRef,
			ObjectRef: &v1alpha2.ObjectRefSource{Kind: "ClusterVirtualImage", Name: img.Name}}}}
	for _, o := range []client.Object{img, disk} {
		if err := f.admin.Create(ctx, o); err != nil {
			f.t.Fatal(err)
		}
	}
	var files vmFiles
	eventually(f.t, 60*time.Second, "image and disk ready, held by the controller", func() (bool, string) {
		if err := f.admin.Get(ctx, client.ObjectKeyFromObject(img), img); err != nil {
			return false, err.Error()
		}
		if err := f.admin.Get(ctx, client.ObjectKeyFromObject(disk), disk); err != nil {
			return false, err.Error()
		}
		files.image, files.disk = img.Status.Path, disk.Status.Path
		return img.Status.Phase == v1alpha2.ImageReady && disk.Status.Phase == v1alpha2.ImageReady &&
				slices.Contains(img.Finalizers, v1alpha2.FinalizerStorage) && slices.Contains(disk.Finalizers, v1alpha2.FinalizerStorage),
			fmt.Sprintf("image %s %v, disk %s %v", img.Status.Phase, img.Finalizers, disk.Status.Phase, disk.Finalizers)
	})
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vm-" + suffix},
		Spec: v1alpha2.VirtualMachineSpec{RunPolicy: v1alpha2.AlwaysOn, CPU: v1alpha2.CPUSpec{Cores: 1},
			Memory:          v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
			BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: disk.Name}}}}
	eventually(f.t, 30*time.Second, "creating VM "+vm.Name+" (its webhook answers)", func() (bool, string) {
		err := f.admin.Create(ctx, vm)
		return client.IgnoreAlreadyExists(err) == nil, fmt.Sprint(err)
	})
	eventually(f.t, 60*time.Second, "VM "+vm.Name+" held by the controller, its launcher pod made", func() (bool, string) {
		if err := f.admin.Get(ctx, client.ObjectKeyFromObject(vm), vm); err != nil {
			return false, err.Error()
		}
		var pods corev1.PodList
		if err := f.admin.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{v1alpha2.LabelVMName: vm.Name}); err != nil {
			return false, err.Error()
		}
		if len(pods.Items) > 0 {
			files.pod = pods.Items[0].Name
		}
		return slices.Contains(vm.Finalizers, v1alpha2.FinalizerVM) && len(pods.Items) > 0, fmt.Sprintf("finalizers %v, %d pods", vm.Finalizers, len(pods.Items))
	})
	for _, p := range []string{files.image, files.disk} {
		if _, err := os.Stat(p); err != nil {
			f.t.Fatalf("storage file: %v", err)
		}
	}
	return files
}

// checkUninstalled: Ferry's CRDs, and so its objects, are gone; the VM's launcher pod is
// gone; the disk's and the image's files are kept.
func (f *flows) checkUninstalled(ns string, files vmFiles) {
	f.t.Helper()
	ctx := context.Background()
	for _, name := range uninstall.CRDs {
		err := f.admin.Get(ctx, client.ObjectKey{Name: name}, &apiextensionsv1.CustomResourceDefinition{})
		if !apierrors.IsNotFound(err) {
			f.t.Errorf("CRD %s: %v, want it gone", name, err)
		}
	}
	eventually(f.t, 60*time.Second, "the VM's launcher pod gone", func() (bool, string) {
		err := f.admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: files.pod}, &corev1.Pod{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	for _, p := range []string{files.image, files.disk} {
		if _, err := os.Stat(p); err != nil {
			f.t.Errorf("a file the uninstall must keep: %v", err)
		}
	}
}

// checkGone: every object of the release is gone (kubectl delete waited for them).
func (f *flows) checkGone(objs []*unstructured.Unstructured) {
	f.t.Helper()
	for _, u := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(u.GroupVersionKind())
		if err := f.admin.Get(context.Background(), client.ObjectKeyFromObject(u), got); !apierrors.IsNotFound(err) {
			f.t.Errorf("%s after kubectl delete -k: %v (deleted at %v), want it gone", describe(u), err, got.GetDeletionTimestamp())
		}
	}
}

// holdsFor checks that cond keeps holding for d.
func holdsFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	for start := time.Now(); time.Since(start) < d; time.Sleep(100 * time.Millisecond) {
		if ok, seen := cond(); !ok {
			t.Fatalf("%s: stopped after %s of %s: %s", what, time.Since(start).Round(time.Millisecond), d, seen)
		}
	}
}
