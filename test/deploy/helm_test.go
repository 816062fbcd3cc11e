package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/ferryvm/ferry/internal/helmchart"
	"github.com/ferryvm/ferry/internal/testenv"
)

// The chart, deploy/helm/ferry, is generated from deploy/base (internal/helmchart, `make
// helm-chart`). These tests keep it so: the checked-in chart is what the generator writes
// now, and `helm template` renders it to the objects of the kustomize builds.

const chartFix = "run `make helm-chart` and commit deploy/helm/ferry"

// TestHelmChartIsCurrent compares the checked-in chart with what the generator writes from
// the manifests as they are now.
func TestHelmChartIsCurrent(t *testing.T) {
	root := testenv.RepoRoot()
	want, err := helmchart.Generate(root)
	if err != nil {
		t.Fatalf("generating the chart: %v", err)
	}
	dir := filepath.Join(root, helmchart.Dir)
	got := map[string][]byte{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		got[filepath.ToSlash(rel)], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatalf("reading %s: %v (%s)", helmchart.Dir, err, chartFix)
	}
	for name, b := range want {
		switch g, ok := got[name]; {
		case !ok:
			t.Errorf("%s/%s is missing: %s", helmchart.Dir, name, chartFix)
		case !bytes.Equal(g, b):
			t.Errorf("%s/%s differs from what the generator writes from the manifests now: %s", helmchart.Dir, name, chartFix)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s/%s is not generated: %s", helmchart.Dir, name, chartFix)
		}
	}
}

// TestHelmChartRendersKustomize renders the chart with `helm template` and compares the
// objects, parsed, with the kustomize builds: with default values deploy/base, with
// webhookCert.mode=cert-manager deploy/overlays/cert-manager.
func TestHelmChartRendersKustomize(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		args []string
	}{
		{helmchart.Base, nil},
		{helmchart.CertManagerOverlay, []string{"--set", "webhookCert.mode=cert-manager"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			got := helmTemplate(t, tc.args...)
			want := kustomize(t, tc.dir)
			compareObjects(t, got, want)
			t.Logf("helm template %s: the %d objects of kustomize %s", strings.Join(tc.args, " "), len(got), tc.dir)
		})
	}
}

// TestHelmChartValues sets the image, its pull policy, the controller's replicas and a
// setting, and checks that exactly the fields they stand for change: the image of the
// controller, the agent and ferry-config's launcherImage, and so on.
func TestHelmChartValues(t *testing.T) {
	base := manifests(t)
	image, _, _ := unstructured.NestedString(find(t, base, "ConfigMap", "ferry-config").Object, "data", "launcherImage")
	repo := image[:strings.LastIndex(image, ":")]

	t.Run("image.tag", func(t *testing.T) {
		got := helmTemplate(t, "--set", "image.tag=x")
		want := withImage(t, crdsLess(base), repo+":x", "")
		compareObjects(t, crdsLess(got), want)
	})
	t.Run("image, pull policy, replicas, config", func(t *testing.T) {
		got := helmTemplate(t, "--set", "image.repository=registry.example/ferry,image.tag=v1.2.3,image.pullPolicy=Always",
			"--set", "controller.replicas=3,config.ipRange=10.70.0.0/16,config.migrationsParallel=4")
		want := withImage(t, crdsLess(base), "registry.example/ferry:v1.2.3", "Always")
		d := find(t, want, "Deployment", "ferry-controller")
		if err := unstructured.SetNestedField(d.Object, int64(3), "spec", "replicas"); err != nil {
			t.Fatal(err)
		}
		cm := find(t, want, "ConfigMap", "ferry-config")
		for k, v := range map[string]string{"ipRange": "10.70.0.0/16", "migrationsParallel": "4"} {
			if err := unstructured.SetNestedField(cm.Object, v, "data", k); err != nil {
				t.Fatal(err)
			}
		}
		compareObjects(t, crdsLess(got), want)
	})
	t.Run("config.launcherImage", func(t *testing.T) {
		got := helmTemplate(t, "--set", "config.launcherImage=other/launcher:1")
		cm := find(t, got, "ConfigMap", "ferry-config")
		if v, _, _ := unstructured.NestedString(cm.Object, "data", "launcherImage"); v != "other/launcher:1" {
			t.Errorf("launcherImage %q, want other/launcher:1", v)
		}
	})
}

// TestHelmChartLint runs `helm lint --strict` in both webhook certificate modes, and checks
// that values.schema.json refuses an unknown mode and an unknown setting.
func TestHelmChartLint(t *testing.T) {
	chart := filepath.Join(testenv.RepoRoot(), helmchart.Dir)
	for _, args := range [][]string{nil, {"--set", "webhookCert.mode=cert-manager"}} {
		out, err := exec.Command(helmBin(t), append([]string{"lint", "--strict", chart}, args...)...).CombinedOutput()
		if err != nil {
			t.Errorf("helm lint --strict %s: %v\n%s", strings.Join(args, " "), err, out)
		} else {
			t.Logf("helm lint --strict %s:\n%s", strings.Join(args, " "), out)
		}
	}
	for _, set := range []string{"webhookCert.mode=files", "config.ipRang=10.0.0.0/8", "image.pullPolicy=Sometimes"} {
		out, err := exec.Command(helmBin(t), "template", "ferry", chart, "--set", set).CombinedOutput()
		if err == nil {
			t.Errorf("helm template --set %s renders; want the schema to refuse it", set)
		} else {
			t.Logf("--set %s refused: %s", set, firstLines(string(out), 3))
		}
	}
}

// helmBin is the helm binary, which scripts/setup.sh installs.
func helmBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("helm")
	if err != nil {
		t.Fatalf("no helm on the PATH: run scripts/setup.sh (it installs helm v4): %v", err)
	}
	return p
}

// helmTemplate renders the chart, CRDs included, as installed into ferry-system.
func helmTemplate(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	chart := filepath.Join(testenv.RepoRoot(), helmchart.Dir)
	cmd := exec.Command(helmBin(t), append([]string{"template", "ferry", chart, "--namespace", "ferry-system", "--include-crds"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return parseObjects(t, out)
}

// parseObjects reads the objects of a YAML stream, as JSON values (numbers float64).
func parseObjects(t *testing.T, b []byte) []*unstructured.Unstructured {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if obj != nil {
			out = append(out, &unstructured.Unstructured{Object: obj})
		}
	}
}

// compareObjects fails unless got and want hold the same objects (in any order), field for
// field.
func compareObjects(t *testing.T, got, want []*unstructured.Unstructured) {
	t.Helper()
	index := func(objs []*unstructured.Unstructured) map[string]map[string]any {
		m := map[string]map[string]any{}
		for _, u := range objs {
			id := u.GetAPIVersion() + " " + describe(u)
			if _, dup := m[id]; dup {
				t.Errorf("%s twice", id)
			}
			m[id] = normalize(t, u.Object)
		}
		return m
	}
	g, w := index(got), index(want)
	var ids []string
	for id := range w {
		ids = append(ids, id)
	}
	for id := range g {
		if _, ok := w[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		switch {
		case g[id] == nil:
			t.Errorf("the chart renders no %s", id)
		case w[id] == nil:
			t.Errorf("the chart renders %s, which the kustomize build has not", id)
		default:
			if d := cmp.Diff(w[id], g[id]); d != "" {
				t.Errorf("%s differs (-kustomize +chart):\n%s", id, d)
			}
		}
	}
}

// normalize makes an object plain JSON values, as the API server sees it.
func normalize(t *testing.T, obj map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	// The chart keeps its release's namespace on uninstall (helmchart.ReleaseNamespace):
	// the one annotation deploy/base has not.
	if md, _ := out["metadata"].(map[string]any); out["kind"] == "Namespace" && md != nil {
		if ann, _ := md["annotations"].(map[string]any); ann != nil {
			delete(ann, helmchart.ResourcePolicyAnnotation)
			if len(ann) == 0 {
				delete(md, "annotations")
			}
		}
	}
	return out
}

// find returns the object of objs with this kind and name.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	t.Fatalf("no %s %s", kind, name)
	return nil
}

// crdsLess drops the CRDs, which no value changes.
func crdsLess(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() != "CustomResourceDefinition" {
			out = append(out, u)
		}
	}
	return out
}

// withImage copies objs with image in the controller's and the agent's containers and in
// launcherImage, and pullPolicy ("": unchanged) in those containers.
func withImage(t *testing.T, objs []*unstructured.Unstructured, image, pullPolicy string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, u := range objs {
		out = append(out, &unstructured.Unstructured{Object: normalize(t, u.Object)})
	}
	if err := unstructured.SetNestedField(find(t, out, "ConfigMap", "ferry-config").Object, image, "data", "launcherImage"); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct{ kind, name string }{{"Deployment", "ferry-controller"}, {"DaemonSet", "ferry-agent"}} {
		u := find(t, out, w.kind, w.name)
		containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		if len(containers) != 1 {
			t.Fatalf("%s %s has %d containers, want 1", w.kind, w.name, len(containers))
		}
		c := containers[0].(map[string]any)
		c["image"] = image
		if pullPolicy != "" {
			c["imagePullPolicy"] = pullPolicy
		}
		if err := unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers"); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
