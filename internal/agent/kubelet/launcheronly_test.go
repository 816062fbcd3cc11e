package kubelet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestStandInRunsOnlyLaunchers: the stand-in runs pods as root processes, so it takes
// exactly ferry-launcher (or `ferry launcher`, of pods made before it) from a pod with the
// launcher label, and none of a pod's own environment.
func TestStandInRunsOnlyLaunchers(t *testing.T) {
	pod := func(labelled bool, cmd, args []string, env ...corev1.EnvVar) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "compute", Command: cmd, Args: args, Env: env}}}}
		if labelled {
			p.Labels[v1alpha2.LabelLauncher] = "virt-launcher"
		}
		return p
	}
	ferry, light := []string{"ferry"}, []string{"ferry-launcher"}
	const refused = `runs only the command "ferry-launcher" (or "ferry launcher")`
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want string // "" runs
	}{
		{"launcher", pod(true, light, []string{"--vm", "a"}, corev1.EnvVar{Name: "FERRY_RUN_DIR", Value: "/x"}), ""},
		{"launcher without arguments", pod(true, light, nil), ""},
		{"launcher of an earlier release", pod(true, ferry, []string{"launcher", "--vm", "a"}, corev1.EnvVar{Name: "FERRY_RUN_DIR", Value: "/x"}), ""},
		{"no launcher label", pod(false, light, []string{"--vm", "a"}), "runs only Ferry's launcher pods"},
		{"no launcher label, earlier release", pod(false, ferry, []string{"launcher"}), "runs only Ferry's launcher pods"},
		{"another ferry command", pod(true, ferry, []string{"controller"}), refused},
		{"ferry without arguments", pod(true, ferry, nil), refused},
		{"a shell", pod(true, []string{"sh", "-c", "id"}, nil), refused},
		{"ferry by path", pod(true, []string{"/tmp/ferry"}, []string{"launcher"}), refused},
		{"ferry-launcher by path", pod(true, []string{"/tmp/ferry-launcher"}, nil), refused},
		{"ferry-launcher with arguments in the command", pod(true, []string{"ferry-launcher", "--vm", "a"}, nil), refused},
		{"ferry launcher in the command", pod(true, []string{"ferry", "launcher"}, nil), refused},
		{"LD_PRELOAD", pod(true, light, nil, corev1.EnvVar{Name: "LD_PRELOAD", Value: "/tmp/x.so"}), "sets LD_PRELOAD"},
		{"LD_PRELOAD, earlier release", pod(true, ferry, []string{"launcher"}, corev1.EnvVar{Name: "LD_PRELOAD", Value: "/tmp/x.so"}), "sets LD_PRELOAD"},
	} {
		err := launcherOnly(c.pod)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestMigrationGoesOnlyToANode: the agent starts a migration only to another node, at an
// address that node lists.
func TestMigrationGoesOnlyToANode(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-2"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.66.0.12"}}}}
	k := &Kubelet{o: Options{NodeName: "node-1"}, client: fake.NewClientset(node)}
	for _, c := range []struct {
		req  v1alpha2.MigrationRequest
		want string
	}{
		{v1alpha2.MigrationRequest{URI: "tcp:10.66.0.12:4444", TargetNode: "node-2"}, ""},
		{v1alpha2.MigrationRequest{URI: "tcp:10.66.0.12:4444"}, "names no target node"},
		{v1alpha2.MigrationRequest{URI: "tcp:10.66.0.11:4444", TargetNode: "node-1"}, "is this node"},
		{v1alpha2.MigrationRequest{URI: "tcp:203.0.113.9:4444", TargetNode: "node-2"}, "is not one of node node-2's"},
		{v1alpha2.MigrationRequest{URI: "exec:nc 203.0.113.9 4444", TargetNode: "node-2"}, "is not tcp:HOST:PORT"},
		{v1alpha2.MigrationRequest{URI: "tcp:10.66.0.13:4444", TargetNode: "node-3"}, "not found"},
	} {
		err := k.checkTarget(t.Context(), c.req)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: refused: %v", c.req, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: %v, want %q", c.req, err, c.want)
		}
	}
}

// TestExecRuntimeRunsEitherLauncher: ferry-launcher runs as LauncherExecutable, `ferry
// launcher` (pods of earlier releases) as Executable.
func TestExecRuntimeRunsEitherLauncher(t *testing.T) {
	dir := t.TempDir()
	script := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho "+name+" \"$@\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k := &Kubelet{o: Options{Executable: script("ferry"), LauncherExecutable: script("ferry-launcher")}}
	for _, c := range []struct {
		argv []string
		want string
	}{
		{[]string{"ferry-launcher", "--vm", "a"}, "ferry-launcher --vm a\n"},
		{[]string{"ferry", "launcher", "--vm", "a"}, "ferry launcher --vm a\n"},
	} {
		logf, err := os.Create(filepath.Join(dir, "log"))
		if err != nil {
			t.Fatal(err)
		}
		ct, err := k.execRuntime(c.argv, nil, dir, logf)
		if err != nil {
			t.Fatal(err)
		}
		if code := ct.Wait(); code != 0 {
			t.Errorf("%q: exit code %d", c.argv, code)
		}
		logf.Close()
		if got, _ := os.ReadFile(logf.Name()); string(got) != c.want {
			t.Errorf("%q ran %q, want %q", c.argv, got, c.want)
		}
	}
}
