package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestParseVMRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want vmRef
		err  string
	}{
		{"linux-vm", vmRef{"", "linux-vm"}, ""},
		{"linux-vm.project-1", vmRef{"project-1", "linux-vm"}, ""},
		{"a.b", vmRef{"b", "a"}, ""},
		{"vm.ns.extra", vmRef{}, `"ns.extra" is not a namespace`},
		{".ns", vmRef{}, "no VM name before the dot"},
		{"vm.", vmRef{}, "no namespace after the dot"},
		{"Linux_VM", vmRef{}, "is not a VM name"},
		{"vm.Prod", vmRef{}, "is not a namespace"},
		{"", vmRef{}, "no VM name"},
	} {
		got, err := parseVMRef(tc.in)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("parseVMRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("parseVMRef(%q) = %+v, %v; want an error saying %q", tc.in, got, err, tc.err)
		}
	}
}

// writeKubeconfig writes a kubeconfig whose current context has namespace ns ("": none).
func writeKubeconfig(t *testing.T, name, ns string) string {
	t.Helper()
	nsLine := ""
	if ns != "" {
		nsLine = "\n    namespace: " + ns
	}
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: ctx
  context:
    cluster: c
    user: u` + nsLine + `
current-context: ctx
`
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestTargetNamespace: VM.NAMESPACE, else -n, else the kubeconfig context's namespace,
// else default; an argument and an -n that disagree are refused.
func TestTargetNamespace(t *testing.T) {
	team := writeKubeconfig(t, "team", "team-a")
	plain := writeKubeconfig(t, "plain", "")
	for _, tc := range []struct {
		kubeconfig, flag, arg string
		want                  vmRef
		err                   string
	}{
		{team, "", "vm", vmRef{"team-a", "vm"}, ""},
		{team, "prod", "vm", vmRef{"prod", "vm"}, ""},
		{team, "", "vm.other", vmRef{"other", "vm"}, ""},
		{team, "other", "vm.other", vmRef{"other", "vm"}, ""},
		{team, "prod", "vm.other", vmRef{}, "names namespace other but -n says prod"},
		{plain, "", "vm", vmRef{"default", "vm"}, ""},
		// $KUBECONFIG as a list, merged as kubectl merges it: the first file that sets a
		// context (both name theirs ctx) wins.
		{plain + string(filepath.ListSeparator) + team, "", "vm", vmRef{"default", "vm"}, ""},
		{team + string(filepath.ListSeparator) + plain, "", "vm", vmRef{"team-a", "vm"}, ""},
		// An unreadable kubeconfig leaves the namespace to default; the client says why.
		{"/nonexistent/kubeconfig", "", "vm", vmRef{"default", "vm"}, ""},
		{team, "", "vm.", vmRef{}, "no namespace after the dot"},
	} {
		g := &Globals{Kubeconfig: func() string { return tc.kubeconfig }, Namespace: tc.flag}
		got, err := g.target(tc.arg)
		if tc.err == "" {
			if err != nil || got != tc.want {
				t.Errorf("kubeconfig %s, -n %q: target(%q) = %+v, %v; want %+v", tc.kubeconfig, tc.flag, tc.arg, got, err, tc.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("target(%q) with -n %q = %+v, %v; want an error saying %q", tc.arg, tc.flag, got, err, tc.err)
		}
	}
}

// TestVerbsParseDeckhouseForms: the guide's command lines parse (d8's flags and short
// forms), and the VM argument goes through target.
func TestVerbsParseDeckhouseForms(t *testing.T) {
	for _, args := range [][]string{
		{"migrate", "-n", "project-1", "linux-vm", "--force", "--target-node-name", "production-1"},
		{"migrate", "linux-vm.project-1", "-f", "-w", "-t", "1m", "-y"},
		{"migrate", "linux-vm", "--target-node", "node-3", "--wait"},
		{"evict", "linux-vm", "-w", "--force=false"},
		{"restart", "linux-vm", "-f", "-w"},
		{"stop", "linux-vm", "--force", "--wait"},
		{"start", "linux-vm", "--wait"},
		{"console", "linux-vm.project-1", "--log"},
		{"vnc", "linux-vm", "--proxy-only", "--port", "5900"},
	} {
		root := newCommand(&Globals{Kubeconfig: func() string { return "/nonexistent/kubeconfig" }, Out: os.Stdout})
		cmd, rest, err := root.Find(args)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
	root := newCommand(&Globals{})
	start, _, _ := root.Find([]string{"start"})
	if start.Flags().Lookup("force") != nil {
		t.Error("start has --force: Deckhouse refuses a forced Start")
	}
	// A wrong VM argument is refused before any cluster is asked.
	root.SetArgs([]string{"migrate", "linux-vm.", "--target-node-name", "n"})
	root.SetOut(&strings.Builder{})
	root.SetErr(&strings.Builder{})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "no namespace after the dot") {
		t.Errorf("migrate linux-vm.: %v", err)
	}
}

func TestNewOperation(t *testing.T) {
	vm := vmRef{"project-1", "linux-vm"}
	op := newOperation(v1alpha2.OpMigrate, vm, opFlags{force: ptr.To(true), targetNode: "production-1"})
	if op.Namespace != "project-1" || op.Spec.VirtualMachineName != "linux-vm" || op.Spec.Type != v1alpha2.OpMigrate ||
		op.Spec.Force == nil || !*op.Spec.Force || op.Spec.Migrate == nil || len(op.Spec.Migrate.NodeSelector) != 1 ||
		op.Spec.Migrate.NodeSelector["kubernetes.io/hostname"] != "production-1" || !strings.HasPrefix(op.GenerateName, "migrate-linux-vm-") {
		t.Errorf("migrate --force --target-node-name production-1: %+v %+v", op.ObjectMeta, op.Spec)
	}
	if op := newOperation(v1alpha2.OpEvict, vm, opFlags{force: ptr.To(false)}); op.Spec.Force == nil || *op.Spec.Force || op.Spec.Migrate != nil {
		t.Errorf("evict --force=false: %+v; want force false kept (it turns AutoConverge off under PreferForced)", op.Spec)
	}
	if op := newOperation(v1alpha2.OpStop, vm, opFlags{}); op.Spec.Force != nil {
		t.Errorf("stop without --force: force %v; want unset", *op.Spec.Force)
	}
	if op := newOperation(v1alpha2.OpStart, vm, opFlags{force: ptr.To(true)}); op.Spec.Force != nil {
		t.Errorf("start: force %v; Deckhouse refuses a forced Start", *op.Spec.Force)
	}
}

// FuzzParseVMRef: whatever parseVMRef takes names an object that can exist: a VM name
// without a dot, a namespace that is a DNS label, and written back as it was read.
func FuzzParseVMRef(f *testing.F) {
	for _, s := range []string{"vm", "vm.ns", "a.b.c", ".x", "x.", "VM", "vm..ns", "-vm", "vm.-ns", strings.Repeat("a", 254), ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := parseVMRef(s)
		if err != nil {
			return
		}
		if ref.Name == "" || strings.Contains(ref.Name, ".") || len(validation.IsDNS1123Subdomain(ref.Name)) > 0 {
			t.Fatalf("parseVMRef(%q) took name %q", s, ref.Name)
		}
		back := ref.Name
		if ref.Namespace != "" {
			if len(validation.IsDNS1123Label(ref.Namespace)) > 0 {
				t.Fatalf("parseVMRef(%q) took namespace %q", s, ref.Namespace)
			}
			back += "." + ref.Namespace
		}
		if back != s {
			t.Fatalf("parseVMRef(%q) = %+v, which reads back as %q", s, ref, back)
		}
	})
}
