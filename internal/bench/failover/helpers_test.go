package failover

import (
	"strings"
	"testing"
)

// fields returns the whitespace-separated cells of the table line that starts with prefix.
func fields(t *testing.T, out, prefix string) []string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.Fields(l)
		}
	}
	t.Fatalf("no line starting with %q in:\n%s", prefix, out)
	return nil
}
