package migration

import (
	"testing"

	"k8s.io/utils/ptr"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestAutoConvergeMatrix(t *testing.T) {
	unset, yes, no := (*bool)(nil), ptr.To(true), ptr.To(false)
	tests := []struct {
		policy  v1alpha2.LiveMigrationPolicy
		force   *bool
		want    bool
		refused bool
	}{
		{v1alpha2.AlwaysSafe, unset, false, false},
		{v1alpha2.AlwaysSafe, no, false, false},
		{v1alpha2.AlwaysSafe, yes, false, true},
		{v1alpha2.PreferSafe, unset, false, false},
		{v1alpha2.PreferSafe, no, false, false},
		{v1alpha2.PreferSafe, yes, true, false},
		{v1alpha2.AlwaysForced, unset, true, false},
		{v1alpha2.AlwaysForced, yes, true, false},
		{v1alpha2.AlwaysForced, no, false, true},
		{v1alpha2.PreferForced, unset, true, false},
		{v1alpha2.PreferForced, yes, true, false},
		{v1alpha2.PreferForced, no, false, false},
		{"", yes, true, false}, // the default policy is PreferSafe
	}
	for _, tc := range tests {
		got, err := autoConverge(tc.policy, tc.force)
		if (err != nil) != tc.refused || (err == nil && got != tc.want) {
			t.Errorf("autoConverge(%s, %v) = %v, %v; want %v refused=%v", tc.policy, ptr.Deref(tc.force, false), got, err, tc.want, tc.refused)
		}
	}
}
