package restore

import (
	"testing"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestRename: a nameReplacement that matches by name (and kind, if it names one) renames
// first, then the prefix and suffix are added to every name.
func TestRename(t *testing.T) {
	repl := []v1alpha2.NameReplacement{
		{From: v1alpha2.NameReplacementFrom{Kind: "VirtualMachine", Name: "db"}, To: "db-clone"},
		{From: v1alpha2.NameReplacementFrom{Name: "db-root"}, To: "db-clone-root"},
	}
	for _, c := range []struct {
		spec       v1alpha2.CloneSpec
		kind, name string
		want       string
	}{
		{v1alpha2.CloneSpec{NameReplacement: repl}, "VirtualMachine", "db", "db-clone"},
		{v1alpha2.CloneSpec{NameReplacement: repl}, "VirtualDisk", "db", "db"},
		{v1alpha2.CloneSpec{NameReplacement: repl}, "VirtualDisk", "db-root", "db-clone-root"},
		{v1alpha2.CloneSpec{Customization: &v1alpha2.NameCustomization{NamePrefix: "clone-", NameSuffix: "-prod"}}, "VirtualDisk", "database-root", "clone-database-root-prod"},
		{v1alpha2.CloneSpec{NameReplacement: repl, Customization: &v1alpha2.NameCustomization{NameSuffix: "-2"}}, "VirtualMachine", "db", "db-clone-2"},
	} {
		if got := rename(&c.spec, c.kind, c.name); got != c.want {
			t.Errorf("rename(%+v, %s %s) = %s, want %s", c.spec, c.kind, c.name, got, c.want)
		}
	}
}
