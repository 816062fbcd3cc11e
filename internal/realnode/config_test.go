package realnode

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"
)

func testConfig(t *testing.T) (Config, Cluster) {
	dir := t.TempDir()
	return Config{Name: "node-1", IP: "10.66.0.11", Dir: dir, StorageDir: "/srv/storage", Kubelet: "/bin/kubelet",
			KubeProxy: "/bin/kube-proxy", Labels: []string{"node.deckhouse.io/group=ferry"},
			Images: []Image{{Ref: "docker.io/ferryvm/ferry:0.2.0", Archive: "/x/ferry.oci.tar", Digest: "sha256:ab"}}},
		Cluster{APIServer: "https://10.66.0.1:6443", CAFile: "/pki/ca.crt", PodSubnet: "10.244.1.0/24", ClusterCIDR: "10.244.0.0/16",
			SandboxImage: "docker.io/ferryvm/ferry-pause:1.0", KubeletCert: "/pki/k.crt", KubeletKey: "/pki/k.key"}
}

// TestPrepareWritesConfigsTheComponentsAccept: the kubelet's and kube-proxy's files
// decode strictly into their own configuration types (a misspelt field would be ignored
// by them, or refused at start), and say what the node needs.
func TestPrepareWritesConfigsTheComponentsAccept(t *testing.T) {
	c, cl := testConfig(t)
	boot, err := Prepare(c, cl)
	if err != nil {
		t.Fatal(err)
	}
	var kc kubeletv1beta1.KubeletConfiguration
	raw, err := os.ReadFile(c.path(kubeletConfig))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &kc); err != nil {
		t.Fatalf("kubelet.yaml: %v\n%s", err, raw)
	}
	if kc.Authentication.Anonymous.Enabled == nil || *kc.Authentication.Anonymous.Enabled || kc.Authorization.Mode != "Webhook" {
		t.Errorf("kubelet allows anonymous or unauthorized access: %+v %+v", kc.Authentication, kc.Authorization)
	}
	if kc.CgroupRoot != "/ferry/node-1" || kc.CgroupDriver != "cgroupfs" || kc.FailCgroupV1 == nil || *kc.FailCgroupV1 {
		t.Errorf("cgroups: root %q driver %q failCgroupV1 %v", kc.CgroupRoot, kc.CgroupDriver, kc.FailCgroupV1)
	}
	if !strings.HasSuffix(kc.ContainerRuntimeEndpoint, filepath.Join("real", containerdSocket)) || kc.Address != "10.66.0.11" {
		t.Errorf("runtime %q, address %q", kc.ContainerRuntimeEndpoint, kc.Address)
	}
	var pc kubeproxyv1alpha1.KubeProxyConfiguration
	if raw, err = os.ReadFile(c.path(kubeProxyConfig)); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, &pc); err != nil {
		t.Fatalf("kube-proxy.yaml: %v\n%s", err, raw)
	}
	if pc.Mode != "nftables" || pc.ClusterCIDR != cl.ClusterCIDR || pc.Conntrack.MaxPerCore == nil || *pc.Conntrack.MaxPerCore != 0 {
		t.Errorf("kube-proxy: mode %q clusterCIDR %q conntrack %+v", pc.Mode, pc.ClusterCIDR, pc.Conntrack)
	}
	var cni struct {
		Plugins []struct {
			Type string
			IPAM struct {
				Ranges  [][]struct{ Subnet string }
				DataDir string `json:"dataDir"`
			}
		}
	}
	if raw, err = os.ReadFile(c.path("cni", "net.d", "10-ferry.conflist")); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &cni); err != nil || len(cni.Plugins) == 0 || cni.Plugins[0].IPAM.Ranges[0][0].Subnet != cl.PodSubnet ||
		!strings.HasPrefix(cni.Plugins[0].IPAM.DataDir, c.Dir) {
		t.Errorf("CNI config %v: %s", err, raw)
	}
	ctd, err := os.ReadFile(c.path(containerdConfig))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`sandbox_image = "docker.io/ferryvm/ferry-pause:1.0"`, "SystemdCgroup = false", "restrict_oom_score_adj = true",
		`address = "` + c.path(containerdSocket) + `"`, `root = "` + c.path("containerd") + `"`} {
		if !strings.Contains(string(ctd), want) {
			t.Errorf("containerd.toml lacks %s:\n%s", want, ctd)
		}
	}
	var back Config
	if raw, err = os.ReadFile(boot); err != nil || json.Unmarshal(raw, &back) != nil || back.Name != c.Name || len(back.Images) != 1 {
		t.Errorf("boot.json %v: %s", err, raw)
	}
}

// TestCommandNamesTheNodeDirectory: the node's first process names the node's directory
// on its command line, which is how a power loss (watchdog.KillNode) finds it; it runs in
// the node's network namespace, and new mount and PID namespaces.
func TestCommandNamesTheNodeDirectory(t *testing.T) {
	c, cl := testConfig(t)
	boot, err := Prepare(c, cl)
	if err != nil {
		t.Fatal(err)
	}
	argv := Command("/bin/ferry", "ferry-node-1", boot)
	for _, want := range []string{"--pid", "--mount", "--fork", "--kill-child", "--net=/run/netns/ferry-node-1", "node-boot"} {
		if !slices.Contains(argv, want) {
			t.Errorf("%v lacks %s", argv, want)
		}
	}
	if !strings.HasPrefix(argv[len(argv)-1], c.Dir+"/") {
		t.Errorf("%v does not name the node directory %s", argv, c.Dir)
	}
	args := c.kubeletArgs()
	if !slices.Contains(args, "--hostname-override") || !slices.Contains(args, "node.deckhouse.io/group=ferry") || slices.Contains(args, c.Kubelet) {
		t.Errorf("kubelet args %v", args)
	}
}
