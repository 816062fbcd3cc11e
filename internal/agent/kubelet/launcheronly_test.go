package kubelet

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestStandInRunsOnlyLaunchers: the stand-in runs pods as root processes, so it takes
// exactly `ferry launcher` from a pod with the launcher label, and none of a pod's own
// environment.
func TestStandInRunsOnlyLaunchers(t *testing.T) {
	pod := func(labelled bool, cmd, args []string, env ...corev1.EnvVar) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "compute", Command: cmd, Args: args, Env: env}}}}
		if labelled {
			p.Labels[v1alpha2.LabelLauncher] = "virt-launcher"
		}
		return p
	}
	ferry := []string{"ferry"}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want string // "" runs
	}{
		{"launcher", pod(true, ferry, []string{"launcher", "--vm", "a"}, corev1.EnvVar{Name: "FERRY_RUN_DIR", Value: "/x"}), ""},
		{"no launcher label", pod(false, ferry, []string{"launcher"}), "runs only Ferry's launcher pods"},
		{"another ferry command", pod(true, ferry, []string{"controller"}), `runs only the command "ferry launcher"`},
		{"no arguments", pod(true, ferry, nil), `runs only the command "ferry launcher"`},
		{"a shell", pod(true, []string{"sh", "-c", "id"}, nil), `runs only the command "ferry launcher"`},
		{"ferry by path", pod(true, []string{"/tmp/ferry"}, []string{"launcher"}), `runs only the command "ferry launcher"`},
		{"LD_PRELOAD", pod(true, ferry, []string{"launcher"}, corev1.EnvVar{Name: "LD_PRELOAD", Value: "/tmp/x.so"}), "sets LD_PRELOAD"},
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
