package apidiff

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// schema parses a hand-written openAPIV3Schema.
func schema(t *testing.T, text string) *apiextensionsv1.JSONSchemaProps {
	t.Helper()
	s := &apiextensionsv1.JSONSchemaProps{}
	if err := yaml.UnmarshalStrict([]byte(text), s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFlatten(t *testing.T) {
	for _, tc := range []struct {
		name, schema string
		want         []Field
	}{{
		name: "array of objects, required and nested enum",
		schema: `
type: object
required: [refs]
properties:
  refs:
    type: array
    items:
      type: object
      required: [kind]
      properties:
        kind: {type: string, enum: [VirtualImage, VirtualDisk]}
        name: {type: string}`,
		want: []Field{
			{Path: "refs", Type: "[]object", Required: true},
			{Path: "refs[].kind", Type: "string", Enum: []string{"VirtualDisk", "VirtualImage"}, Required: true},
			{Path: "refs[].name", Type: "string"},
		},
	}, {
		name: "maps via additionalProperties",
		schema: `
type: object
properties:
  labels: {type: object, additionalProperties: {type: string}}
  limits:
    type: object
    additionalProperties:
      type: object
      properties:
        policy: {type: string, enum: [A, B]}
  anything: {type: object, additionalProperties: true}`,
		want: []Field{
			{Path: "anything", Type: "map[string]any"},
			{Path: "labels", Type: "map[string]string"},
			{Path: "limits", Type: "map[string]object"},
			{Path: "limits{}.policy", Type: "string", Enum: []string{"A", "B"}},
		},
	}, {
		name: "int-or-string, preserve-unknown-fields, array of enums",
		schema: `
type: object
properties:
  size: {x-kubernetes-int-or-string: true, anyOf: [{type: integer}, {type: string}]}
  raw: {type: object, x-kubernetes-preserve-unknown-fields: true}
  open: {x-kubernetes-preserve-unknown-fields: true}
  modes: {type: array, items: {type: string, enum: [Z, "Y"]}}
  grid: {type: array, items: {type: array, items: {type: integer, enum: [2, 1]}}}`,
		want: []Field{
			{Path: "grid", Type: "[][]integer", Enum: []string{"1", "2"}},
			{Path: "modes", Type: "[]string", Enum: []string{"Y", "Z"}},
			{Path: "open", Type: "any (preserve-unknown-fields)"},
			{Path: "raw", Type: "object (preserve-unknown-fields)"},
			{Path: "size", Type: "int-or-string"},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := Flatten("", schema(t, tc.schema))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	dh := []Kind{{Name: "VM", Scope: "Namespaced", Fields: []Field{
		{Path: "spec", Type: "object", Required: true},
		{Path: "spec.gone", Type: "object"},
		{Path: "spec.gone.deep", Type: "string"},
		{Path: "spec.policy", Type: "string", Enum: []string{"A", "B"}},
		{Path: "spec.size", Type: "int-or-string", Required: true},
		{Path: "status.phase", Type: "string", Enum: []string{"Ready"}},
	}}, {Name: "Pool", Scope: "Namespaced"}}
	fe := []Kind{{Name: "VM", Scope: "Cluster", Fields: []Field{
		{Path: "spec", Type: "object", Required: true},
		{Path: "spec.extra", Type: "boolean"},
		{Path: "spec.policy", Type: "string", Enum: []string{"A", "C"}},
		{Path: "spec.size", Type: "string"},
		{Path: "status.phase", Type: "string"},
	}}}
	diffs := Compare(dh, fe)
	if len(diffs) != 2 || diffs[0].Name != "Pool" || diffs[0].InFerry || !diffs[1].InFerry {
		t.Fatalf("kinds: %+v", diffs)
	}
	status := map[string]string{}
	for _, r := range diffs[1].Rows {
		status[r.Path] = string(r.Status) + " " + r.Detail
	}
	want := map[string]string{
		"spec":           "same ",
		"spec.extra":     "Ferry only ",
		"spec.gone":      "missing ",
		"spec.gone.deep": "missing ",
		"spec.policy":    `differs enum lacks "B"; adds "C"`,
		"spec.size":      "differs type `string`; optional in Ferry",
		"status.phase":   `differs no enum (Deckhouse's: "Ready")`,
	}
	if !reflect.DeepEqual(status, want) {
		t.Errorf("rows:\n%v\nwant\n%v", status, want)
	}
	doc := string(Render("test", diffs))
	for _, s := range []string{
		"| scope | Namespaced | differs: Cluster |",
		"| `spec.gone` | `object` | missing (with 1 fields below) |",
		"| [Pool](#pool) | no | 0 | 0 | 0 | 0 |",
	} {
		if !strings.Contains(doc, s) {
			t.Errorf("document lacks %q:\n%s", s, doc)
		}
	}
	if strings.Contains(doc, "spec.gone.deep") {
		t.Errorf("document lists a field below a missing one:\n%s", doc)
	}
}

func TestFactsRoundTrip(t *testing.T) {
	kinds := []Kind{{Name: "VM", Scope: "Namespaced", ShortNames: []string{"vm"}, Columns: []string{"Phase", "Need restart"},
		Fields: []Field{{Kind: "VM", Path: "spec", Type: "object", Required: true}, {Kind: "VM", Path: "spec.a", Type: "string", Enum: []string{"", "x y"}}}}}
	var b bytes.Buffer
	if err := WriteFacts(&b, "src", kinds); err != nil {
		t.Fatal(err)
	}
	source, got, err := ReadFacts(&b)
	if err != nil {
		t.Fatal(err)
	}
	if source != "src" || !reflect.DeepEqual(got, kinds) {
		t.Errorf("got %q %+v, want %+v", source, got, kinds)
	}
}
