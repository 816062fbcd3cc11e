package apidiff

import (
	"fmt"
	"io"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// Render writes the comparison as Markdown: a summary, then per kind its facts and a table
// of fields. Below a field that is missing (or Ferry only), its subfields are counted in the
// summary but not listed.
func Render(source string, diffs []KindDiff) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Deckhouse's API on Ferry\n\n")
	fmt.Fprintf(&b, "Written by `make api-diff` (hack/apidiff, internal/apidiff): do not edit.\n\n")
	fmt.Fprintf(&b, "The CRD schemas of %s/%s in Deckhouse's virtualization module\n", Group, Version)
	fmt.Fprintf(&b, "(%s),\nkept as facts in internal/apidiff/testdata, against Ferry's (api/crds), field path by\n", source)
	fmt.Fprintf(&b, "field path: type, enum values, required. `[]` is an array's items, `{}` a map's values;\n")
	fmt.Fprintf(&b, "\"enum lacks\" lists the values Deckhouse accepts and Ferry does not. internal/apidiff's\n")
	fmt.Fprintf(&b, "test fails when this file no longer matches the CRDs.\n\n")
	fmt.Fprintf(&b, "## Summary\n\n| Kind | In Ferry | Same | Missing | Differs | Ferry only |\n|---|---|---|---|---|---|\n")
	for _, d := range diffs {
		in := "yes"
		switch {
		case !d.InFerry:
			in = "no"
		case !d.InDeckhouse:
			in = "Ferry only"
		}
		fmt.Fprintf(&b, "| [%s](#%s) | %s | %d | %d | %d | %d |\n", d.Name, strings.ToLower(d.Name), in,
			d.Count(Same), d.Count(Missing), d.Count(Differs), d.Count(FerryOnly))
	}
	for _, d := range diffs {
		renderKind(&b, d)
	}
	return []byte(b.String())
}

func renderKind(b *strings.Builder, d KindDiff) {
	fmt.Fprintf(b, "\n## %s\n\n", d.Name)
	switch {
	case !d.InFerry:
		fmt.Fprintf(b, "Not in Ferry (%d fields in Deckhouse).\n", len(d.Rows))
		return
	case !d.InDeckhouse:
		fmt.Fprintf(b, "Ferry only (%d fields).\n", len(d.Rows))
		return
	}
	fmt.Fprintf(b, "| | Deckhouse | Ferry |\n|---|---|---|\n")
	for _, f := range d.Facts {
		fe := "same"
		if f.Ferry != f.Deckhouse {
			fe = "differs: " + orNone(f.Ferry)
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", f.Name, cell(orNone(f.Deckhouse)), cell(fe))
	}
	fmt.Fprintf(b, "\n| Field | Deckhouse type | Ferry |\n|---|---|---|\n")
	hidden := map[string]bool{} // missing or Ferry-only paths, whose subfields are not listed
	for _, r := range d.Rows {
		if under(r.Path, hidden) {
			continue
		}
		dhType, fe := "", string(r.Status)
		if r.Deckhouse != nil {
			dhType = "`" + r.Deckhouse.Type + "`"
			if r.Deckhouse.Required {
				dhType += ", required"
			}
		}
		switch r.Status {
		case Differs:
			fe = "differs: " + r.Detail
		case Missing, FerryOnly:
			hidden[r.Path] = true
			if n := countUnder(r.Path, d.Rows); n > 0 {
				fe += fmt.Sprintf(" (with %d fields below)", n)
			}
		}
		fmt.Fprintf(b, "| `%s` | %s | %s |\n", r.Path, cell(dhType), cell(fe))
	}
}

// under reports whether path is below one of the paths in set.
func under(path string, set map[string]bool) bool {
	for i := 1; i < len(path); i++ {
		if strings.ContainsRune(".[{", rune(path[i])) && set[path[:i]] {
			return true
		}
	}
	return false
}

func countUnder(path string, rows []Row) int {
	n := 0
	for _, r := range rows {
		if under(r.Path, map[string]bool{path: true}) {
			n++
		}
	}
	return n
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Document is docs/deckhouse-api.md: Deckhouse's side read from a facts file, Ferry's from its
// CRDs. `make api-diff` writes it and the package's test recomputes it, through this one path.
func Document(facts io.Reader, ferry []*apiextensionsv1.CustomResourceDefinition) ([]byte, error) {
	source, deckhouse, err := ReadFacts(facts)
	if err != nil {
		return nil, fmt.Errorf("facts: %w", err)
	}
	var ours []Kind
	for _, crd := range ferry {
		if k, ok := FromCRD(crd); ok {
			ours = append(ours, k)
		}
	}
	return Render(source, Compare(deckhouse, ours)), nil
}
