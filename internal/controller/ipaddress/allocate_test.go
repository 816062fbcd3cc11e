package ipaddress

import (
	"context"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// TestCandidatesCrossRanges: with every address of the first range leased, the next
// candidate is the first address of the second range; with all leased, there is none; one
// freed in the first range is found again after the search wraps round.
func TestCandidatesCrossRanges(t *testing.T) {
	s := runtime.NewScheme()
	if err := v1alpha2.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	rs := ipam.MustParseRanges("10.0.0.0/29,10.0.1.0/29")
	var objs []client.Object
	for i := 2; i <= 6; i++ {
		objs = append(objs, lease(fmt.Sprintf("10.0.0.%d", i), "a", fmt.Sprintf("ip%d", i), nil))
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
	r := &Reconciler{Client: c, Ranges: rs}
	ctx := context.Background()
	a, ok := r.nextCandidate(ctx)
	if !ok || a.String() != "10.0.1.2" {
		t.Fatalf("with the first range full, the candidate is %s (%v), want 10.0.1.2", a, ok)
	}
	for i := 2; i <= 6; i++ {
		if err := c.Create(ctx, lease(fmt.Sprintf("10.0.1.%d", i), "a", fmt.Sprintf("ip1-%d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if a, ok := r.nextCandidate(ctx); ok {
		t.Fatalf("every address leased, yet the candidate is %s", a)
	}
	// Freed in the first range: found again after wrapping round.
	if err := c.Delete(ctx, lease("10.0.0.4", "", "", nil)); err != nil {
		t.Fatal(err)
	}
	if a, ok := r.nextCandidate(ctx); !ok || a.String() != "10.0.0.4" {
		t.Fatalf("after freeing 10.0.0.4 the candidate is %s (%v)", a, ok)
	}
}
