package apidiff

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// The facts file: a "# source" line naming where the facts come from, then one JSON object a
// line, sorted: a kind's scope, short names and printer columns, or one of its fields.

const sourcePrefix = "# source: "

// WriteFacts writes kinds as a facts file.
func WriteFacts(w io.Writer, source string, kinds []Kind) error {
	var lines []string
	for _, k := range kinds {
		b, err := json.Marshal(k)
		if err != nil {
			return err
		}
		lines = append(lines, string(b))
		for _, f := range k.Fields {
			b, err := json.Marshal(f)
			if err != nil {
				return err
			}
			lines = append(lines, string(b))
		}
	}
	sort.Strings(lines)
	_, err := fmt.Fprintf(w, "%s%s\n%s\n", sourcePrefix, source, strings.Join(lines, "\n"))
	return err
}

// ReadFacts reads a facts file written by WriteFacts.
func ReadFacts(r io.Reader) (source string, kinds []Kind, err error) {
	byName := map[string]*Kind{}
	var fields []Field
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		switch {
		case bytes.HasPrefix(line, []byte(sourcePrefix)):
			source = strings.TrimPrefix(string(line), sourcePrefix)
		case len(bytes.TrimSpace(line)) == 0:
		case bytes.Contains(line, []byte(`"path":`)):
			var f Field
			if err := json.Unmarshal(line, &f); err != nil {
				return "", nil, fmt.Errorf("line %d: %w", n, err)
			}
			fields = append(fields, f)
		default:
			var k Kind
			if err := json.Unmarshal(line, &k); err != nil {
				return "", nil, fmt.Errorf("line %d: %w", n, err)
			}
			byName[k.Name] = &k
		}
	}
	if err := sc.Err(); err != nil {
		return "", nil, err
	}
	for _, f := range fields {
		k, ok := byName[f.Kind]
		if !ok {
			return "", nil, fmt.Errorf("field %s of kind %s, which has no kind line", f.Path, f.Kind)
		}
		k.Fields = append(k.Fields, f)
	}
	for _, k := range byName {
		sort.Slice(k.Fields, func(i, j int) bool { return k.Fields[i].Path < k.Fields[j].Path })
		kinds = append(kinds, *k)
	}
	sort.Slice(kinds, func(i, j int) bool { return kinds[i].Name < kinds[j].Name })
	return source, kinds, nil
}
