// Package apidiff compares Deckhouse's CRD schemas for virtualization.deckhouse.io/v1alpha2
// with Ferry's, field by field, and writes the comparison as a Markdown table
// (docs/deckhouse-api.md).
//
// A schema is flattened into field paths (`spec.cpu.cores`, `spec.blockDeviceRefs[].kind`,
// `spec.nodeSelector{}` for a map's values) with a type, enum values and whether the field
// is required by its parent. Only properties, items and additionalProperties are walked:
// allOf/oneOf/anyOf, defaults, patterns and CEL rules are validation detail this table does
// not cover yet.
//
// Deckhouse's side is kept as a facts file (testdata/deckhouse-v1alpha2.txt: kinds, field
// paths, types, enums; no descriptions), written by `make api-diff` from a mirror of
// Deckhouse's repository, so the package's test can recompute the table offline and fail
// when Ferry's CRDs drift from what the checked-in document says. The package reads CRDs;
// it never writes Ferry's (those come from api/ by controller-gen).
package apidiff
