package up

import (
	"strings"
	"testing"

	"github.com/ferryvm/ferry/internal/ipam"
)

// TestCheckVMRanges: the default ranges fit beside the node network; a range over it is
// refused, named.
func TestCheckVMRanges(t *testing.T) {
	if err := checkVMRanges(ipam.MustParseRanges(ipam.DefaultRanges).Prefixes()); err != nil {
		t.Errorf("default ranges: %v", err)
	}
	err := checkVMRanges(ipam.MustParseRanges("10.60.0.0/24,10.66.0.0/16").Prefixes())
	if err == nil || !strings.Contains(err.Error(), "10.66.0.0/16 overlaps the node network 10.66.0.0/24") {
		t.Errorf("a range over the node network: %v", err)
	}
}
