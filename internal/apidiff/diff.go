package apidiff

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Status is how Ferry stands on one of Deckhouse's fields.
type Status string

const (
	Same      Status = "same"
	Missing   Status = "missing"
	Differs   Status = "differs"
	FerryOnly Status = "Ferry only"
)

// Row is one field path of a kind, in Deckhouse, in Ferry or in both.
type Row struct {
	Path      string
	Deckhouse *Field // nil when Ferry only
	Status    Status
	Detail    string // for Differs: what differs
}

// Fact is one kind-level fact: scope, short names, printer columns.
type Fact struct {
	Name, Deckhouse, Ferry string
}

// KindDiff compares one kind.
type KindDiff struct {
	Name                 string
	InDeckhouse, InFerry bool
	Facts                []Fact
	Rows                 []Row
}

// Count returns how many of the kind's fields have status s.
func (d KindDiff) Count(s Status) int {
	n := 0
	for _, r := range d.Rows {
		if r.Status == s {
			n++
		}
	}
	return n
}

// Compare compares Deckhouse's kinds with Ferry's, sorted by kind.
func Compare(deckhouse, ferry []Kind) []KindDiff {
	byName := map[string][2]*Kind{}
	for i := range deckhouse {
		k := byName[deckhouse[i].Name]
		k[0] = &deckhouse[i]
		byName[deckhouse[i].Name] = k
	}
	for i := range ferry {
		k := byName[ferry[i].Name]
		k[1] = &ferry[i]
		byName[ferry[i].Name] = k
	}
	var out []KindDiff
	for name, k := range byName {
		out = append(out, compareKind(name, k[0], k[1]))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func compareKind(name string, dh, fe *Kind) KindDiff {
	d := KindDiff{Name: name, InDeckhouse: dh != nil, InFerry: fe != nil}
	if dh == nil {
		dh = &Kind{}
	}
	if fe == nil {
		fe = &Kind{}
	}
	if d.InDeckhouse && d.InFerry {
		d.Facts = []Fact{
			{"scope", dh.Scope, fe.Scope},
			{"short names", strings.Join(dh.ShortNames, ", "), strings.Join(fe.ShortNames, ", ")},
			{"printer columns", strings.Join(dh.Columns, ", "), strings.Join(fe.Columns, ", ")},
		}
	}
	ferryFields := map[string]Field{}
	for _, f := range fe.Fields {
		ferryFields[f.Path] = f
	}
	for _, f := range dh.Fields {
		r := Row{Path: f.Path, Deckhouse: &f, Status: Missing}
		if g, ok := ferryFields[f.Path]; ok {
			delete(ferryFields, f.Path)
			r.Detail = fieldDiff(f, g)
			r.Status = Same
			if r.Detail != "" {
				r.Status = Differs
			}
		}
		d.Rows = append(d.Rows, r)
	}
	for path := range ferryFields {
		d.Rows = append(d.Rows, Row{Path: path, Status: FerryOnly})
	}
	sort.Slice(d.Rows, func(i, j int) bool { return d.Rows[i].Path < d.Rows[j].Path })
	return d
}

// fieldDiff says how Ferry's field g differs from Deckhouse's f, or "" when it does not.
func fieldDiff(f, g Field) string {
	var parts []string
	if f.Type != g.Type {
		parts = append(parts, "type `"+g.Type+"`")
	}
	if dOnly, fOnly := minus(f.Enum, g.Enum), minus(g.Enum, f.Enum); len(g.Enum) == 0 && len(f.Enum) > 0 {
		parts = append(parts, "no enum (Deckhouse's: "+strings.Join(dOnly, ", ")+")")
	} else if len(dOnly)+len(fOnly) > 0 {
		e := "enum"
		if len(dOnly) > 0 {
			e += " lacks " + strings.Join(dOnly, ", ")
		}
		if len(fOnly) > 0 {
			if len(dOnly) > 0 {
				e += ";"
			}
			e += " adds " + strings.Join(fOnly, ", ")
		}
		parts = append(parts, e)
	}
	switch {
	case f.Required && !g.Required:
		parts = append(parts, "optional in Ferry")
	case !f.Required && g.Required:
		parts = append(parts, "required in Ferry")
	}
	return strings.Join(parts, "; ")
}

// minus returns the values of a not in b.
func minus(a, b []string) []string {
	var out []string
	for _, v := range a {
		if !slices.Contains(b, v) {
			out = append(out, fmt.Sprintf("%q", v))
		}
	}
	return out
}
