package apidiff

import (
	"encoding/json"
	"sort"
	"strings"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// Group and Version are the API this package compares.
const (
	Group   = "virtualization.deckhouse.io"
	Version = "v1alpha2"
)

// Field is one field path of a kind's schema.
type Field struct {
	Kind     string   `json:"kind"`
	Path     string   `json:"path"`
	Type     string   `json:"type"`
	Enum     []string `json:"enum,omitempty"`
	Required bool     `json:"required,omitempty"`
}

// Kind is what a CRD says of one kind at Version.
type Kind struct {
	Name       string   `json:"kind"`
	Scope      string   `json:"scope"`
	ShortNames []string `json:"shortNames,omitempty"`
	Columns    []string `json:"columns,omitempty"`
	Fields     []Field  `json:"-"`
}

// FromCRD reads a kind from a CRD; ok is false when the CRD is of another group or has no
// schema at Version.
func FromCRD(crd *apiextensionsv1.CustomResourceDefinition) (k Kind, ok bool) {
	if crd.Spec.Group != Group {
		return Kind{}, false
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != Version || v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			continue
		}
		k = Kind{
			Name:       crd.Spec.Names.Kind,
			Scope:      string(crd.Spec.Scope),
			ShortNames: append([]string(nil), crd.Spec.Names.ShortNames...),
			Fields:     Flatten(crd.Spec.Names.Kind, v.Schema.OpenAPIV3Schema),
		}
		sort.Strings(k.ShortNames)
		for _, c := range v.AdditionalPrinterColumns {
			k.Columns = append(k.Columns, c.Name)
		}
		return k, true
	}
	return Kind{}, false
}

// Flatten lists every field under the schema's root, sorted by path. An array's items are
// under `path[]`, a map's values (additionalProperties) under `path{}`.
func Flatten(kind string, root *apiextensionsv1.JSONSchemaProps) []Field {
	var out []Field
	walk(kind, "", root, &out)
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// walk records the properties of s (an object, or the items or values below it) under prefix.
func walk(kind, prefix string, s *apiextensionsv1.JSONSchemaProps, out *[]Field) {
	if s == nil {
		return
	}
	switch {
	case s.Type == "array" && s.Items != nil:
		walk(kind, prefix+"[]", s.Items.Schema, out)
	case s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
		walk(kind, prefix+"{}", s.AdditionalProperties.Schema, out)
	}
	required := map[string]bool{}
	for _, r := range s.Required {
		required[r] = true
	}
	// A field a rule of its parent requires (has(self.f), the whole rule) is required too:
	// Ferry writes some that way, for a clearer refusal than the schema's.
	for _, v := range s.XValidations {
		if name, ok := strings.CutPrefix(v.Rule, "has(self."); ok && strings.HasSuffix(name, ")") {
			if name = strings.TrimSuffix(name, ")"); s.Properties != nil && !strings.ContainsAny(name, ".()&|!") {
				required[name] = true
			}
		}
	}
	for name, p := range s.Properties {
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		*out = append(*out, Field{Kind: kind, Path: path, Type: typeOf(&p), Enum: enumOf(&p), Required: required[name]})
		walk(kind, path, &p, out)
	}
}

// typeOf names a schema's type the way Go would spell it: []string, map[string]object,
// int-or-string; "any" where the schema leaves it open.
func typeOf(s *apiextensionsv1.JSONSchemaProps) string {
	if s == nil {
		return "any"
	}
	t := s.Type
	switch {
	case s.XIntOrString:
		t = "int-or-string"
	case t == "array" && s.Items != nil:
		t = "[]" + typeOf(s.Items.Schema)
	case s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
		t = "map[string]" + typeOf(s.AdditionalProperties.Schema)
	case s.AdditionalProperties != nil && s.AdditionalProperties.Allows:
		t = "map[string]any"
	case t == "":
		t = "any"
	}
	if s.XPreserveUnknownFields != nil && *s.XPreserveUnknownFields {
		t += " (preserve-unknown-fields)"
	}
	return t
}

// enumOf returns the sorted enum of a scalar, or of an array's items or a map's values.
func enumOf(s *apiextensionsv1.JSONSchemaProps) []string {
	switch {
	case s.Type == "array" && s.Items != nil && s.Items.Schema != nil:
		return enumOf(s.Items.Schema)
	case s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
		return enumOf(s.AdditionalProperties.Schema)
	}
	var out []string
	for _, e := range s.Enum {
		var v any
		if json.Unmarshal(e.Raw, &v) == nil {
			if str, ok := v.(string); ok {
				out = append(out, str)
				continue
			}
		}
		out = append(out, strings.TrimSpace(string(e.Raw)))
	}
	sort.Strings(out)
	return out
}
