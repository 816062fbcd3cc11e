package main

import (
	"slices"
	"testing"
)

// TestSimLauncherArgs: simulated nodes take both shapes of a launcher pod's command line.
func TestSimLauncherArgs(t *testing.T) {
	for _, c := range []struct {
		argv []string
		want []string
		ok   bool
	}{
		{[]string{"ferry-launcher", "--vm", "a"}, []string{"--vm", "a"}, true},
		{[]string{"ferry-launcher"}, []string{}, true},
		{[]string{"ferry", "launcher", "--vm", "a"}, []string{"--vm", "a"}, true},
		{[]string{"ferry", "controller"}, nil, false},
		{[]string{"ferry"}, nil, false},
		{[]string{"sh", "-c", "id"}, nil, false},
		{nil, nil, false},
	} {
		got, ok := launcherArgs(c.argv)
		if ok != c.ok || !slices.Equal(got, c.want) {
			t.Errorf("launcherArgs(%q) = %q, %v; want %q, %v", c.argv, got, ok, c.want, c.ok)
		}
	}
}
