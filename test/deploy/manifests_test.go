package deploy

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ferryvm/ferry/internal/testenv"
)

// TestManifestsApply applies every object of `kubectl kustomize deploy/base`, and of the
// cert-manager overlay, with a server-side dry run: the apiserver validates each (schemas,
// CEL of the policies, admission) without keeping it.
func TestManifestsApply(t *testing.T) {
	cluster(t)
	base := map[string]int{
		"Namespace": 2, "CustomResourceDefinition": 18, "ConfigMap": 1, "Deployment": 1, "DaemonSet": 1,
		"ServiceAccount": 2, "ClusterRole": 6, "ValidatingWebhookConfiguration": 2, "MutatingWebhookConfiguration": 1, "Service": 2,
		"ValidatingAdmissionPolicy": 5, "ValidatingAdmissionPolicyBinding": 5,
	}
	// cert-manager issues the certificate: its Issuer and Certificate come, the
	// controller's grants and policy for its own CA go.
	certManager := maps.Clone(base)
	certManager["Issuer"], certManager["Certificate"] = 1, 1
	certManager["ClusterRole"], certManager["ValidatingAdmissionPolicy"], certManager["ValidatingAdmissionPolicyBinding"] = 5, 4, 4
	for _, tc := range []struct {
		dir   string
		kinds map[string]int
	}{{"deploy/base", base}, {"deploy/overlays/cert-manager", certManager}} {
		t.Run(tc.dir, func(t *testing.T) {
			objs := kustomize(t, tc.dir)
			kinds := map[string]int{}
			for _, u := range objs {
				kinds[u.GetKind()]++
				err := admin.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(u), fieldOwner, client.ForceOwnership, client.DryRunAll)
				if err != nil {
					t.Errorf("%s does not apply: %v", describe(u), err)
				}
			}
			t.Logf("%d objects applied (dry run): %v", len(objs), kinds)
			for kind, n := range tc.kinds {
				if kinds[kind] != n {
					t.Errorf("%s has %d %s, want %d", tc.dir, kinds[kind], kind, n)
				}
			}
		})
	}
}

// TestWorkloadFlagsParse runs `ferry controller` and `ferry-agent` with the arguments of
// the Deployment and the DaemonSet (of deploy/base, and the controller's of the cert-manager
// overlay), the ConfigMap's values filled in as the kubelet would, and --help: every flag
// exists and every value parses, and every key they take from ferry-config is in it.
func TestWorkloadFlagsParse(t *testing.T) {
	ferry := ferryBin(t)
	var config corev1.ConfigMap
	fromManifest(t, manifest(t, "ConfigMap", "ferry-config"), &config)
	var deployment appsv1.Deployment
	fromManifest(t, manifest(t, "Deployment", "ferry-controller"), &deployment)
	var daemonset appsv1.DaemonSet
	fromManifest(t, manifest(t, "DaemonSet", "ferry-agent"), &daemonset)
	var certManager appsv1.Deployment
	for _, u := range kustomize(t, "deploy/overlays/cert-manager") {
		if u.GetKind() == "Deployment" && u.GetName() == "ferry-controller" {
			fromManifest(t, u, &certManager)
		}
	}
	containers := slices.Concat(deployment.Spec.Template.Spec.Containers, daemonset.Spec.Template.Spec.Containers)
	for _, c := range certManager.Spec.Template.Spec.Containers {
		c.Name += " (cert-manager overlay)"
		containers = append(containers, c)
	}

	for _, c := range containers {
		args := expand(t, c, config.Data)
		// The image's binaries: ferry, and ferry-agent beside it (the DaemonSet's).
		if len(c.Command) != 1 || (c.Command[0] != "ferry" && c.Command[0] != "ferry-agent") {
			t.Errorf("container %s runs %v, want ferry or ferry-agent", c.Name, c.Command)
			continue
		}
		bin := filepath.Join(filepath.Dir(ferry), c.Command[0])
		out, err := exec.Command(bin, append(args, "--help")...).CombinedOutput()
		if err != nil {
			t.Errorf("container %s: %s %s: %v\n%s", c.Name, c.Command[0], strings.Join(args, " "), err, firstLines(string(out), 3))
			continue
		}
		t.Logf("container %s: %s %s: parses", c.Name, c.Command[0], strings.Join(args, " "))
	}
}

// expand fills in a container's $(VAR) references from its environment, as the kubelet
// does: ConfigMap keys from data, the downward API with stand-in values.
func expand(t *testing.T, c corev1.Container, data map[string]string) []string {
	t.Helper()
	vars := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			vars[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := data[ref.Key]
			if ref.Name != "ferry-config" || !ok {
				t.Errorf("container %s: env %s takes key %s of ConfigMap %s, which ferry-config does not have", c.Name, e.Name, ref.Key, ref.Name)
			}
			vars[e.Name] = v
		case e.ValueFrom.FieldRef != nil:
			vars[e.Name] = map[string]string{"spec.nodeName": "node-1", "status.hostIP": "192.0.2.10"}[e.ValueFrom.FieldRef.FieldPath]
		}
	}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	var out []string
	for _, a := range c.Args {
		a = ref.ReplaceAllStringFunc(a, func(m string) string {
			name := ref.FindStringSubmatch(m)[1]
			v, ok := vars[name]
			if !ok {
				t.Errorf("container %s: argument %q uses $(%s), which its env does not define", c.Name, a, name)
			}
			return v
		})
		out = append(out, a)
	}
	return out
}

func fromManifest(t *testing.T, u interface{ UnstructuredContent() map[string]any }, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.UnstructuredContent(), into); err != nil {
		t.Fatal(err)
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// TestImagesPinned: deploy/base and its cert-manager overlay run one image, at the tag set
// once in deploy/base/kustomization.yaml (images:), which ferry-config's launcherImage names
// too (launcher pods run it); no object names a :latest or untagged image, and every
// container pulls only if the node lacks the image (a node that reaches no registry runs
// what it has, and a moving tag cannot mix builds on one cluster).
func TestImagesPinned(t *testing.T) {
	var k struct {
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "deploy", "base", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	if len(k.Images) != 1 || k.Images[0].NewTag == "" || k.Images[0].NewTag == "latest" {
		t.Fatalf("deploy/base/kustomization.yaml images: %+v, want one image with a fixed newTag", k.Images)
	}
	name := k.Images[0].Name
	if k.Images[0].NewName != "" {
		name = k.Images[0].NewName
	}
	want := name + ":" + k.Images[0].NewTag
	for _, dir := range []string{"deploy/base", "deploy/overlays/cert-manager"} {
		t.Run(dir, func(t *testing.T) {
			objs := kustomize(t, dir)
			var launcher string
			containers := 0
			for _, u := range objs {
				if u.GetKind() == "ConfigMap" && u.GetName() == "ferry-config" {
					launcher, _, _ = unstructured.NestedString(u.Object, "data", "launcherImage")
				}
				// Any image anywhere: a :latest one is refused wherever it is.
				walkStrings(u.Object, func(path, s string) {
					if strings.HasSuffix(path, ".image") && (strings.HasSuffix(s, ":latest") || !strings.Contains(s[strings.LastIndex(s, "/")+1:], ":")) {
						t.Errorf("%s %s: image %q has no fixed tag", describe(u), path, s)
					}
				})
				spec, ok, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "template", "spec")
				if !ok {
					continue
				}
				var pod corev1.PodSpec
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(spec.(map[string]any), &pod); err != nil {
					t.Fatal(err)
				}
				for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
					containers++
					if c.Image != want {
						t.Errorf("%s container %s: image %s, want %s (kustomization.yaml images:)", describe(u), c.Name, c.Image, want)
					}
					if c.ImagePullPolicy != corev1.PullIfNotPresent {
						t.Errorf("%s container %s: imagePullPolicy %q, want IfNotPresent", describe(u), c.Name, c.ImagePullPolicy)
					}
				}
			}
			if containers < 2 {
				t.Errorf("%d containers found, want the controller's and the agent's", containers)
			}
			if launcher != want {
				t.Errorf("ferry-config launcherImage %q, want %s: the launcher pods run the image of the controller and the agent (config.yaml and kustomization.yaml images: disagree)", launcher, want)
			}
		})
	}
}

// walkStrings calls f with the path and value of every string in obj.
func walkStrings(obj any, f func(path, s string)) {
	var walk func(string, any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		case string:
			f(path, v)
		}
	}
	walk("", obj)
}

// TestAgentStartsWithoutWatchdog: the agent's DaemonSet finds the node's watchdog itself
// (--watchdog=auto) and needs no device to start: no hostPath volume of a device type,
// which would keep its pod from starting on a node without one.
func TestAgentStartsWithoutWatchdog(t *testing.T) {
	var ds appsv1.DaemonSet
	fromManifest(t, manifest(t, "DaemonSet", "ferry-agent"), &ds)
	spec := ds.Spec.Template.Spec
	for _, v := range spec.Volumes {
		if hp := v.HostPath; hp != nil && hp.Type != nil && (*hp.Type == corev1.HostPathCharDev || *hp.Type == corev1.HostPathBlockDev || *hp.Type == corev1.HostPathFile) {
			t.Errorf("volume %s needs %s to be a %s on the node: a node without it runs no agent", v.Name, hp.Path, *hp.Type)
		}
	}
	for _, c := range spec.Containers {
		if !slices.Contains(c.Args, "--watchdog=auto") {
			t.Errorf("container %s: args %v, want --watchdog=auto", c.Name, c.Args)
		}
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("container %s is not privileged: it would not see the node's /dev/watchdog", c.Name)
		}
	}
}

// TestLauncherDevicesByPlugin: the controller runs launcher pods unprivileged
// (--launcher-devices=plugin) only beside agents that offer the devices: each agent runs
// its device plugin in the kubelet's device-plugins directory (--device-plugin-dir), which
// it mounts from the node at the same path, without needing it there to start.
func TestLauncherDevicesByPlugin(t *testing.T) {
	var deployment appsv1.Deployment
	fromManifest(t, manifest(t, "Deployment", "ferry-controller"), &deployment)
	var ds appsv1.DaemonSet
	fromManifest(t, manifest(t, "DaemonSet", "ferry-agent"), &ds)
	if args := deployment.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--launcher-devices=plugin") {
		t.Errorf("controller args %v, want --launcher-devices=plugin", args)
	}
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	var dir string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--device-plugin-dir="); ok {
			dir = v
		}
	}
	if dir != "/var/lib/kubelet/device-plugins" {
		t.Fatalf("agent args %v, want --device-plugin-dir=/var/lib/kubelet/device-plugins", c.Args)
	}
	var volume string
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir && !m.ReadOnly {
			volume = m.Name
		}
	}
	for _, v := range spec.Volumes {
		if v.Name != volume {
			continue
		}
		if hp := v.HostPath; hp == nil || hp.Path != dir || hp.Type == nil || *hp.Type != corev1.HostPathDirectoryOrCreate {
			t.Errorf("volume %s: %+v, want the node's %s (DirectoryOrCreate)", v.Name, v.VolumeSource, dir)
		}
		return
	}
	t.Errorf("the agent mounts nothing writable at %s (volume %q)", dir, volume)
}
