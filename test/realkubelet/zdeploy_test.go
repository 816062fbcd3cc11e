package realkubelet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/up"
)

// This file's name sorts last: its test removes Ferry from the cluster and installs it
// again, several ways, after the scenarios.

// TestInstallUpgradeUninstall takes deploy/ through what an operator does on this cluster
// of real kubelets: uninstall (ferry uninstall, kubectl delete -k: nothing stuck), install of the previous
// release and upgrade to this one with kubectl apply -k, then the Helm chart: install,
// upgrade with a changed setting, uninstall. After each install a VM starts and runs.
func TestInstallUpgradeUninstall(t *testing.T) {
	// Uninstalling Ferry stops what it runs: the guide's order is VMs first.
	removeSample(t)
	uninstallKustomize(t)

	// The previous release, then this one over it. Both name the same image: what changed
	// is the manifests (the agent of the previous one needs /dev/watchdog and never starts
	// on these nodes; the upgrade fixes that). This image's controller on the previous
	// release's manifests (without the CRDs and rights of the kinds added since) stops at
	// once and says so; the upgrade fixes that too.
	prev, err := os.ReadFile(filepath.Join(repo, "test", "deploy", "testdata", "previous-release.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	image := currentImage(t)
	prevManifest := strings.ReplaceAll(string(prev), "ferryvm/ferry:latest", image)
	mustFerry(t, "k", "apply", "--server-side", "-f", writeTemp(t, prevManifest))
	eventually(t, 3*time.Minute, "the controller on the previous release's manifests saying what it lacks", func() (bool, string) {
		var said string
		for _, previous := range []string{"--previous=false", "--previous"} {
			out, err := ferry(t, "k", "-n", "ferry-system", "logs", "deploy/ferry-controller", previous, "--tail", "5")
			if err == nil && strings.Contains(out, "is not this controller's release; CRDs not installed:") {
				return true, ""
			}
			said += out
		}
		return false, said
	})
	t0 := time.Now()
	mustFerry(t, "k", "apply", "--server-side", "--force-conflicts", "-k", "deploy/base")
	// The agent DaemonSet updates OnDelete (its pods feed the watchdogs): replace them.
	mustFerry(t, "k", "-n", "ferry-system", "delete", "pod", "-l", "app.kubernetes.io/name=ferry-agent", "--wait=false")
	waitFerry(t)
	t.Logf("upgrade from the previous release with kubectl apply -k: Ferry ready %s after", time.Since(t0).Round(100*time.Millisecond))
	runVM(t, "after-upgrade")
	uninstallKustomize(t)

	// Helm: install, upgrade with a changed setting, uninstall.
	t0 = time.Now()
	helm(t, "install", "ferry", "deploy/helm/ferry", "-n", "ferry-system", "--create-namespace", "--wait=false")
	waitFerry(t)
	t.Logf("helm install: Ferry ready %s after", time.Since(t0).Round(100*time.Millisecond))
	runVM(t, "after-helm-install")
	helm(t, "upgrade", "ferry", "deploy/helm/ferry", "-n", "ferry-system", "--reset-then-reuse-values", "--set", "config.migrationBandwidth=512Mi")
	var cm corev1.ConfigMap
	if err := kc.Get(t.Context(), client.ObjectKey{Namespace: "ferry-system", Name: "ferry-config"}, &cm); err != nil || cm.Data["migrationBandwidth"] != "512Mi" {
		t.Errorf("after helm upgrade: ferry-config %v %v", cm.Data, err)
	}
	waitFerry(t)
	runVM(t, "after-helm-upgrade")
	// As for kubectl: Ferry's VMs and CRDs first (helm leaves CRDs), then the release.
	mustFerry(t, "uninstall")
	helm(t, "uninstall", "ferry", "-n", "ferry-system", "--wait")
	// The chart keeps the namespace that held its release record; the README's last step.
	mustFerry(t, "k", "delete", "namespace", "ferry-system", "--wait=false")
	eventually(t, 3*time.Minute, "Ferry's namespace gone after helm uninstall", func() (bool, string) {
		var ns corev1.Namespace
		err := kc.Get(t.Context(), client.ObjectKey{Name: "ferry-system"}, &ns)
		return apierrors.IsNotFound(err), fmt.Sprintf("%v %s", err, ns.Status.Phase)
	})
}

func helm(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "helm", args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "KUBECONFIG="+up.KubeconfigPath(stateDir))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// currentImage is the image deploy/base names (the nodes have it: ferry up loaded it).
func currentImage(t *testing.T) string {
	t.Helper()
	out := mustFerry(t, "k", "kustomize", "deploy/base")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "image:" {
			return f[1]
		}
	}
	t.Fatal("deploy/base names no image")
	return ""
}

// imageURL is where ferry up serves the test guest's image (the sample image's source).
var imageURL string

// removeSample deletes the sample VM, its disk and image, and waits until they are gone.
func removeSample(t *testing.T) {
	t.Helper()
	var cvi v1alpha2.ClusterVirtualImage
	if err := kc.Get(t.Context(), client.ObjectKey{Name: up.SampleImage}, &cvi); err != nil || cvi.Spec.DataSource.HTTP == nil {
		t.Fatalf("sample image: %v", err)
	}
	imageURL = cvi.Spec.DataSource.HTTP.URL
	mustFerry(t, "k", "delete", "vm", up.SampleVM, "--wait=true", "--timeout=2m")
	mustFerry(t, "k", "delete", "vd", up.SampleDisk, "--wait=true", "--timeout=2m")
	mustFerry(t, "k", "delete", "cvi", up.SampleImage, "--wait=true", "--timeout=2m")
}

// uninstallKustomize removes deploy/base as the README says, `ferry uninstall` (VMs and
// CRDs, while the controller runs) then kubectl delete -k, and checks that nothing is left:
// no namespace, no CRD, nothing held by a finalizer.
func uninstallKustomize(t *testing.T) {
	t.Helper()
	t0 := time.Now()
	mustFerry(t, "uninstall")
	mustFerry(t, "k", "delete", "-k", "deploy/base", "--ignore-not-found", "--wait=true", "--timeout=3m")
	eventually(t, 3*time.Minute, "deploy/base gone", func() (bool, string) {
		var ns corev1.Namespace
		if err := kc.Get(t.Context(), client.ObjectKey{Name: "ferry-system"}, &ns); !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("namespace ferry-system %s %v", ns.Status.Phase, err)
		}
		var crds apiextensionsv1.CustomResourceDefinitionList
		if err := kc.List(t.Context(), &crds); err != nil {
			return false, err.Error()
		}
		for _, c := range crds.Items {
			if strings.HasSuffix(c.Name, "virtualization.deckhouse.io") {
				return false, "CRD " + c.Name + " left, finalizers " + strings.Join(c.Finalizers, ",")
			}
		}
		return true, ""
	})
	t.Logf("kubectl delete -k deploy/base: gone in %s", time.Since(t0).Round(100*time.Millisecond))
	// Every node stays up: the agents disarmed their watchdogs as they stopped.
	var nodes corev1.NodeList
	if err := kc.List(t.Context(), &nodes); err != nil || len(nodes.Items) != 3 {
		t.Errorf("nodes after uninstall: %d, %v", len(nodes.Items), err)
	}
}

func deploymentReady(t *testing.T) bool {
	var dep appsv1.Deployment
	err := kc.Get(t.Context(), client.ObjectKey{Namespace: "ferry-system", Name: "ferry-controller"}, &dep)
	return err == nil && dep.Status.ReadyReplicas >= 1
}

// waitFerry waits until a controller replica and the agent on every node are ready.
func waitFerry(t *testing.T) {
	t.Helper()
	eventually(t, 4*time.Minute, "Ferry ready", func() (bool, string) {
		var ds appsv1.DaemonSet
		if err := kc.Get(t.Context(), client.ObjectKey{Namespace: "ferry-system", Name: "ferry-agent"}, &ds); err != nil {
			return false, err.Error()
		}
		return deploymentReady(t) && ds.Status.NumberReady == 3 && ds.Status.UpdatedNumberScheduled == 3,
			fmt.Sprintf("agents ready %d, updated %d", ds.Status.NumberReady, ds.Status.UpdatedNumberScheduled)
	})
}

// runVM creates a VM with a disk from the test guest image (served by ferry up), waits
// until it runs, then deletes all of it.
func runVM(t *testing.T, name string) {
	t.Helper()
	objs := up.SampleObjects(imageURL, "default")
	for _, o := range objs {
		o.SetName(name + "-" + o.GetName())
	}
	objs[1].(*v1alpha2.VirtualDisk).Spec.DataSource.ObjectRef.Name = objs[0].GetName()
	vm := objs[2].(*v1alpha2.VirtualMachine)
	vm.Spec.BlockDeviceRefs[0].Name = objs[1].GetName()
	vm.Spec.Memory.Size = resource.MustParse("128Mi")
	for _, o := range objs {
		if err := kc.Create(t.Context(), o); err != nil {
			t.Fatalf("create %s: %v", o.GetName(), err)
		}
	}
	t0 := time.Now()
	waitRunning(t, vm.Name, 3*time.Minute)
	t.Logf("VM %s Running %s after it was created", vm.Name, time.Since(t0).Round(100*time.Millisecond))
	for i := len(objs) - 1; i >= 0; i-- {
		o := objs[i]
		if err := kc.Delete(t.Context(), o); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, o.GetName()+" deleted", func() (bool, string) {
			err := kc.Get(t.Context(), client.ObjectKeyFromObject(o), o.DeepCopyObject().(client.Object))
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	}
}
