package kubectl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

const kubeconfigTmpl = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: SERVER
contexts:
- name: c
  context:
    cluster: c
    user: u
current-context: c
users:
- name: u
  user:
    token: t
`

func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte(strings.Replace(kubeconfigTmpl, "SERVER", server, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// run executes `root k args...` and returns stdout.
func run(t *testing.T, defaultKubeconfig string, args ...string) string {
	t.Helper()
	root := &cobra.Command{Use: "ferry"}
	root.AddCommand(NewCommand(defaultKubeconfig))
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"k"}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("ferry k %v: %v (stderr: %s)", args, err, errOut.String())
	}
	return out.String()
}

const serverJSONPath = "jsonpath={.clusters[0].cluster.server}"

func TestDefaultKubeconfig(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	def := writeKubeconfig(t, "https://default.example:6443")
	if got := run(t, def, "config", "view", "--minify", "-o", serverJSONPath); got != "https://default.example:6443" {
		t.Fatalf("server = %q", got)
	}
	// An explicit --kubeconfig (anywhere in the args) wins over the default.
	other := writeKubeconfig(t, "https://flag.example:6443")
	if got := run(t, def, "config", "view", "--minify", "-o", serverJSONPath, "--kubeconfig", other); got != "https://flag.example:6443" {
		t.Fatalf("server with --kubeconfig = %q", got)
	}
}

func TestKUBECONFIGWins(t *testing.T) {
	env := writeKubeconfig(t, "https://env.example:6443")
	t.Setenv("KUBECONFIG", env)
	def := writeKubeconfig(t, "https://default.example:6443")
	if got := run(t, def, "config", "view", "--minify", "-o", serverJSONPath); got != "https://env.example:6443" {
		t.Fatalf("server = %q", got)
	}
}

func TestPassThroughAndStdin(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	def := writeKubeconfig(t, "https://default.example:6443")
	// Flags unknown to ferry (and -o/-f) reach kubectl untouched; -f - reads
	// the command's stdin. --local keeps it offline.
	root := &cobra.Command{Use: "ferry"}
	root.AddCommand(NewCommand(def))
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	// kubectl's "-f -" reads os.Stdin itself (not the command's input).
	stdin := filepath.Join(t.TempDir(), "stdin")
	if err := os.WriteFile(stdin, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-stdin\n  namespace: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(stdin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	oldStdin := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = oldStdin }()
	root.SetArgs([]string{"k", "label", "--local", "-f", "-", "a=b", "-o", "name"})
	if err := root.Execute(); err != nil {
		t.Fatalf("execute: %v (%s)", err, out.String())
	}
	if got := strings.TrimSpace(out.String()); got != "configmap/from-stdin" {
		t.Fatalf("output = %q", got)
	}
}
