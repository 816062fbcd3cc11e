package apidiff

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/api/crds"
)

// TestDocumentIsCurrent recomputes docs/deckhouse-api.md from the facts file and Ferry's
// CRDs: a difference closed or opened in api/ must be written there by `make api-diff`.
func TestDocumentIsCurrent(t *testing.T) {
	facts, err := os.Open(filepath.Join("testdata", "deckhouse-v1alpha2.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer facts.Close()
	ferry, err := crds.All()
	if err != nil {
		t.Fatal(err)
	}
	want, err := Document(facts, ferry)
	if err != nil {
		t.Fatal(err)
	}
	docPath := filepath.Join("..", "..", "docs", "deckhouse-api.md")
	got, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: Ferry's CRDs have changed against Deckhouse's; run `make api-diff`.\nFirst difference:\n%s",
			docPath, firstDiff(string(got), string(want)))
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("  line %d in the file: %s\n  line %d expected:    %s", i+1, gl, i+1, wl)
		}
	}
	return ""
}
