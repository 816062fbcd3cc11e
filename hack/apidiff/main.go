// Command apidiff writes docs/deckhouse-api.md, the field-by-field comparison of Deckhouse's
// virtualization CRDs with Ferry's, and internal/apidiff/testdata/deckhouse-v1alpha2.txt, the
// facts of Deckhouse's side that internal/apidiff's test reads without the mirror. Run by
// `make api-diff` from the repository's top directory.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	"github.com/ferryvm/ferry/api/crds"
	"github.com/ferryvm/ferry/internal/apidiff"
)

const (
	factsFile = "internal/apidiff/testdata/deckhouse-v1alpha2.txt"
	docFile   = "docs/deckhouse-api.md"
)

func main() {
	mirror := flag.String("mirror", "/work/.mirror/deckhouse+virtualization/repo",
		"a git directory of github.com/deckhouse/virtualization (bare is fine)")
	rev := flag.String("rev", "HEAD", "the revision of Deckhouse to read")
	root := flag.String("root", ".", "Ferry's top directory")
	flag.Parse()
	if err := run(*mirror, *rev, *root); err != nil {
		fmt.Fprintln(os.Stderr, "apidiff:", err)
		os.Exit(1)
	}
}

func run(mirror, rev, root string) error {
	if _, err := os.Stat(mirror); err != nil {
		return fmt.Errorf("no mirror of Deckhouse's repository at %s: clone one with\n"+
			"  git clone --bare https://github.com/deckhouse/virtualization %s\n"+
			"or pass -mirror DIR", mirror, mirror)
	}
	commit, err := git(mirror, "rev-parse", rev)
	if err != nil {
		return err
	}
	commit = strings.TrimSpace(commit)
	kinds, err := deckhouseKinds(mirror, commit)
	if err != nil {
		return err
	}
	var facts bytes.Buffer
	source := "github.com/deckhouse/virtualization " + commit + " crds/"
	if err := apidiff.WriteFacts(&facts, source, kinds); err != nil {
		return err
	}
	ferry, err := crds.All()
	if err != nil {
		return err
	}
	doc, err := apidiff.Document(bytes.NewReader(facts.Bytes()), ferry)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, factsFile), facts.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(root, docFile), doc, 0o644)
}

// deckhouseKinds reads every CRD in the commit's crds/ (not the doc-ru-* translations nor
// crds/embedded, the CRDs of KubeVirt and CDI that Deckhouse bundles).
func deckhouseKinds(mirror, commit string) ([]apidiff.Kind, error) {
	names, err := git(mirror, "ls-tree", "--name-only", commit, "crds/")
	if err != nil {
		return nil, err
	}
	var kinds []apidiff.Kind
	for _, name := range strings.Fields(names) {
		if !strings.HasSuffix(name, ".yaml") || strings.HasPrefix(filepath.Base(name), "doc-ru-") {
			continue
		}
		text, err := git(mirror, "show", commit+":"+name)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		// Not strict: Deckhouse's schemas carry extensions (x-doc-*) the type does not know.
		if err := yaml.Unmarshal([]byte(text), crd); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if k, ok := apidiff.FromCRD(crd); ok {
			kinds = append(kinds, k)
		}
	}
	return kinds, nil
}

func git(dir string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}
