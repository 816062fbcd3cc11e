package up

import (
	"path/filepath"
	"slices"
	"testing"
)

// TestDefaultImageSourceDirs: ferry up's controller reads the sample's guest image, the
// Debian guest's cache ($FERRY_GUEST_CACHE) and the benchmarks' cache, all absolute.
func TestDefaultImageSourceDirs(t *testing.T) {
	t.Setenv("FERRY_GUEST_CACHE", "/srv/guests")
	t.Setenv("XDG_CACHE_HOME", "/home/u/.cache")
	got := DefaultImageSourceDirs("state")
	abs, _ := filepath.Abs("state/guest")
	want := []string{abs, "/srv/guests", "/home/u/.cache/ferry/guest"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
