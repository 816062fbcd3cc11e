package deploy

import (
	"context"
	"maps"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestManifestsApply applies every object of `kubectl kustomize deploy/base`, and of the
// cert-manager overlay, with a server-side dry run: the apiserver validates each (schemas,
// CEL of the policies, admission) without keeping it.
func TestManifestsApply(t *testing.T) {
	cluster(t)
	base := map[string]int{
		"Namespace": 2, "CustomResourceDefinition": 6, "ConfigMap": 1, "Deployment": 1, "DaemonSet": 1,
		"ServiceAccount": 2, "ClusterRole": 3, "ValidatingWebhookConfiguration": 2, "Service": 2,
		"ValidatingAdmissionPolicy": 4, "ValidatingAdmissionPolicyBinding": 4,
	}
	// cert-manager issues the certificate: its Issuer and Certificate come, the
	// controller's grants and policy for its own CA go.
	certManager := maps.Clone(base)
	certManager["Issuer"], certManager["Certificate"] = 1, 1
	certManager["ClusterRole"], certManager["ValidatingAdmissionPolicy"], certManager["ValidatingAdmissionPolicyBinding"] = 2, 3, 3
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

// TestWorkloadFlagsParse runs `ferry controller` and `ferry agent` with the arguments of
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
		if len(c.Command) != 1 || c.Command[0] != "ferry" {
			t.Errorf("container %s runs %v, want ferry", c.Name, c.Command)
			continue
		}
		out, err := exec.Command(ferry, append(args, "--help")...).CombinedOutput()
		if err != nil {
			t.Errorf("container %s: ferry %s: %v\n%s", c.Name, strings.Join(args, " "), err, firstLines(string(out), 3))
			continue
		}
		t.Logf("container %s: ferry %s: parses", c.Name, strings.Join(args, " "))
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
