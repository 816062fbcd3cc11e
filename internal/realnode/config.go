package realnode

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Paths a real node has, which deploy/'s manifests name as host paths.
const (
	// NodeStateDir is the agent's state directory (deploy/base/agent.yaml); on a node of
	// `ferry up` it is the node's directory, where its watchdog's socket also is.
	NodeStateDir = "/var/lib/ferry/node"
	// StorageDir is the shared storage of images and disks (deploy/base/controller.yaml).
	StorageDir = "/var/lib/ferry/storage"
	// DevicePluginDir is the kubelet's device-plugins directory as the agent mounts it
	// (deploy/base/agent.yaml); on a node of `ferry up` the kubelet's is under its root.
	DevicePluginDir = "/var/lib/kubelet/device-plugins"
)

// Files of a node, under <node dir>/real.
const (
	containerdConfig  = "containerd.toml"
	containerdSocket  = "containerd.sock"
	kubeletConfig     = "kubelet.yaml"
	kubeletKubeconfig = "kubelet.kubeconfig"
	kubeProxyConfig   = "kube-proxy.yaml"
	// KubeProxyKubeconfig is where Prepare expects kube-proxy's kubeconfig.
	KubeProxyKubeconfig = "kube-proxy.kubeconfig"
	bootConfig          = "boot.json"
)

// Config is a node's: what `ferry up` decided and Boot reads.
type Config struct {
	Name string
	IP   string
	// Dir is the node's directory on the machine (up.NodeDir): every process of the
	// node names it, which is how a power loss finds them (watchdog.KillNode).
	Dir string
	// StorageDir is the machine's directory that the node has at StorageDir.
	StorageDir string
	// Kubelet and KubeProxy are the binaries.
	Kubelet   string
	KubeProxy string
	Labels    []string
	Images    []Image
}

// Image is an OCI archive the node's containerd loads under Ref; Digest (the archive's
// manifest digest) tells whether the node already has it.
type Image struct {
	Ref     string
	Archive string
	Digest  string
}

// Cluster is what every node is told of the cluster.
type Cluster struct {
	// APIServer is the apiserver's URL and CAFile its CA (which also signed the
	// kubelet's serving certificate and the apiserver's client certificate).
	APIServer string
	CAFile    string
	// PodSubnet is this node's pods' addresses (a /24 of ClusterCIDR).
	PodSubnet   string
	ClusterCIDR string
	// SandboxImage is the pause image's reference.
	SandboxImage string
	// KubeletCert and KubeletKey are the kubelet's serving certificate, for its address.
	KubeletCert string
	KubeletKey  string
}

func (c *Config) path(parts ...string) string {
	return filepath.Join(append([]string{c.Dir, "real"}, parts...)...)
}

// KubeletKubeconfigPath is where Prepare expects the kubelet's kubeconfig (the node's
// credentials: system:node:<name>).
func (c *Config) KubeletKubeconfigPath() string { return c.path(kubeletKubeconfig) }

// KubeProxyKubeconfigPath is where Prepare expects kube-proxy's kubeconfig.
func (c *Config) KubeProxyKubeconfigPath() string { return c.path(KubeProxyKubeconfig) }

// CgroupRoot is the node's cgroup: its pods' cgroups are under it in every hierarchy.
func (c *Config) CgroupRoot() string { return "/ferry/" + c.Name }

// Prepare writes the node's configuration files; the kubeconfigs are the caller's.
func Prepare(c Config, cl Cluster) (bootPath string, err error) {
	if err := os.MkdirAll(c.path("cni", "net.d"), 0o755); err != nil {
		return "", err
	}
	files := map[string]string{
		containerdConfig: c.containerdConfig(cl),
		kubeletConfig:    c.kubeletConfig(cl),
		kubeProxyConfig:  c.kubeProxyConfig(cl),
		filepath.Join("cni", "net.d", "10-ferry.conflist"): c.cniConfig(cl),
	}
	for name, content := range files {
		if err := os.WriteFile(c.path(name), []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	raw, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", err
	}
	bootPath = c.path(bootConfig)
	return bootPath, os.WriteFile(bootPath, raw, 0o644)
}

// Command is the node: in the network namespace netns (a name under /run/netns), a new
// mount and PID namespace whose first process is `exe node-boot`. Killing that process
// ends every process of the node.
func Command(exe, netns, bootPath string) []string {
	return []string{"unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc",
		"nsenter", "--net=/run/netns/" + netns, exe, "node-boot", "--config", bootPath}
}

// containerdConfig: the node's own root, state and socket; cgroup v1 with cgroupfs (this
// machine's); the CNI plugins Debian installs; no AppArmor profile (the machine may have
// no apparmor_parser) and oom_score_adj only raised, never lowered (a container of the
// machine lacks CAP_SYS_RESOURCE).
func (c *Config) containerdConfig(cl Cluster) string {
	return fmt.Sprintf(`# Written by ferry up for node %[1]s.
version = 2
root = %[2]q
state = %[3]q

[grpc]
  address = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[6]q
`, c.Name, c.path("containerd"), c.path("containerd-state"), c.path(containerdSocket), cl.SandboxImage, c.path("cni", "net.d"))
}

// kubeletConfig: authenticated and authorized by the apiserver (no anonymous access),
// serving with a certificate of the cluster CA; cgroup v1 allowed; its pods under the
// node's own cgroup; no image garbage collection (the images come from no registry) and
// eviction thresholds low enough that the machine's other users do not evict pods.
func (c *Config) kubeletConfig(cl Cluster) string {
	return fmt.Sprintf(`# Written by ferry up for node %[1]s.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[2]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[3]q}
authorization:
  mode: Webhook
tlsCertFile: %[4]q
tlsPrivateKeyFile: %[5]q
containerRuntimeEndpoint: unix://%[6]s
cgroupDriver: cgroupfs
cgroupRoot: %[7]s
failCgroupV1: false
failSwapOn: false
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
serializeImagePulls: false
shutdownGracePeriod: 0s
`, c.Name, c.IP, cl.CAFile, cl.KubeletCert, cl.KubeletKey, c.path(containerdSocket), c.CgroupRoot())
}

// kubeProxyConfig: nftables in the node's network namespace; conntrack sysctls (which
// are the machine's) left alone.
func (c *Config) kubeProxyConfig(cl Cluster) string {
	return fmt.Sprintf(`# Written by ferry up for node %[1]s.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %[2]q
mode: nftables
clusterCIDR: %[3]s
bindAddress: %[4]s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, c.Name, c.path(KubeProxyKubeconfig), cl.ClusterCIDR, c.IP)
}

// cniConfig: a bridge per node with the node's pod subnet; addresses kept in the node's
// directory (host-local's default directory is the machine's, shared by all nodes).
func (c *Config) cniConfig(cl Cluster) string {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "ferry-pods",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": cl.PodSubnet}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": c.path("cni", "ipam"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	raw, _ := json.MarshalIndent(conf, "", "  ")
	return string(raw) + "\n"
}
