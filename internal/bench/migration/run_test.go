package migration

import (
	"testing"
)

func TestFitDirty(t *testing.T) {
	for _, tc := range []struct {
		mem         int64
		dirty, want int
	}{{128, 256, 32}, {256, 256, 128}, {512, 256, 256}, {512, 32, 32}, {96, 32, 0}} {
		if got := fitDirty(tc.mem, tc.dirty); got != tc.want {
			t.Errorf("fitDirty(%d, %d) = %d, want %d", tc.mem, tc.dirty, got, tc.want)
		}
	}
}
