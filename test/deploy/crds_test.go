package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/ferryvm/ferry/internal/testenv"
)

// TestCRDCopyIsCurrent keeps deploy/base/crds generated: the same files as api/crds (which
// controller-gen writes), all of them listed in its kustomization.
func TestCRDCopyIsCurrent(t *testing.T) {
	root := testenv.RepoRoot()
	src := yamlFiles(t, filepath.Join(root, "api", "crds"))
	dst := yamlFiles(t, filepath.Join(root, "deploy", "base", "crds"))
	const fix = "run `make manifests` (after `make generate`)"
	for name, b := range src {
		switch got, ok := dst[name]; {
		case !ok:
			t.Errorf("deploy/base/crds lacks %s: %s", name, fix)
		case !bytes.Equal(got, b):
			t.Errorf("deploy/base/crds/%s differs from api/crds/%s: %s", name, name, fix)
		}
	}
	for name := range dst {
		if _, ok := src[name]; !ok {
			t.Errorf("deploy/base/crds/%s is not in api/crds: %s", name, fix)
		}
	}

	b, err := os.ReadFile(filepath.Join(root, "deploy", "base", "crds", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	var want []string
	for name := range src {
		want = append(want, name)
	}
	slices.Sort(want)
	slices.Sort(k.Resources)
	if !slices.Equal(k.Resources, want) {
		t.Errorf("deploy/base/crds/kustomization.yaml lists %v, api/crds has %v: %s", k.Resources, want, fix)
	}
}

// yamlFiles reads the YAML files of dir but a kustomization.
func yamlFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".yaml") || e.Name() == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	if len(out) == 0 {
		t.Fatalf("no CRDs in %s", dir)
	}
	return out
}
