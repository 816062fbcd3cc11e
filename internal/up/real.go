package up

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	"github.com/ferryvm/ferry/deploy"
	"github.com/ferryvm/ferry/internal/controlplane"
	"github.com/ferryvm/ferry/internal/realnode"
)

// Kubelet modes of `ferry up --kubelet`.
const (
	KubeletStandIn = "stand-in"
	KubeletReal    = "real"
)

// Pods' addresses on real-kubelet nodes: node-N's are 10.244.N.0/24.
const clusterCIDR = "10.244.0.0/16"

func podSubnet(i int) string { return fmt.Sprintf("10.244.%d.0/24", i+1) }

// realBinaries finds the kubelet and kube-proxy: beside the ferry binary (make node-bins
// builds them into bin/), else on PATH.
func realBinaries(exe string) (kubelet, proxy string, err error) {
	find := func(name string) (string, error) {
		if p := filepath.Join(filepath.Dir(exe), name); isExecutable(p) {
			return p, nil
		}
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		return "", fmt.Errorf("no %s beside %s or on PATH: build it with `make node-bins` (a real-kubelet node runs it)", name, exe)
	}
	if kubelet, err = find("kubelet"); err != nil {
		return "", "", err
	}
	if proxy, err = find("kube-proxy"); err != nil {
		return "", "", err
	}
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "unshare", "nsenter", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", "", fmt.Errorf("a real-kubelet node needs %s: run scripts/setup.sh (it installs containerd, runc, the CNI plugins and nftables)", tool)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return "", "", errors.New("a real-kubelet node needs the CNI plugins in /usr/lib/cni: run scripts/setup.sh (Debian's containernetworking-plugins)")
	}
	return kubelet, proxy, nil
}

// The light binaries ferry up runs, built beside ferry by make build: the controller, each
// node's agent (and stand-in kubelet), its watchdog process, and the launchers of its pods.
const (
	ControllerBinary = "ferry-controller"
	AgentBinary      = "ferry-agent"
	WatchdogBinary   = "ferry-watchdog"
	LauncherBinary   = "ferry-launcher"
)

// lightBinary is the path of the binary name beside the ferry binary exe.
func lightBinary(exe, name string) string { return filepath.Join(filepath.Dir(exe), name) }

// checkLightBinaries fails unless the light binaries are beside exe.
func checkLightBinaries(exe string) error {
	names := []string{ControllerBinary, AgentBinary, WatchdogBinary, LauncherBinary}
	for _, name := range names {
		if p := lightBinary(exe, name); !isExecutable(p) {
			return fmt.Errorf("no %s beside %s: build Ferry with `make build` (it builds bin/ferry and bin/%s)", p, exe, strings.Join(names, ", bin/"))
		}
	}
	return nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// prepareRealNodes writes every node's certificates, kubeconfigs and configuration, and
// returns each node's command (realnode.Command).
func prepareRealNodes(cp *controlplane.ControlPlane, exe, stateDir string, nodes []nodeNet, images []realnode.Image, sandbox string) ([][]string, error) {
	kubelet, proxy, err := realBinaries(exe)
	if err != nil {
		return nil, err
	}
	var cmds [][]string
	for i, n := range nodes {
		cfg := realnode.Config{
			Name: n.Name, IP: n.IP, Dir: NodeDir(stateDir, n.Name), StorageDir: filepath.Join(stateDir, "storage"),
			Kubelet: kubelet, KubeProxy: proxy, Images: images,
			Labels: []string{deckhousev1.LabelNodeGroup + "=" + nodeGroupName},
		}
		if err := os.MkdirAll(filepath.Dir(cfg.KubeletKubeconfigPath()), 0o755); err != nil {
			return nil, err
		}
		// The node's own credentials: the Node authorizer and NodeRestriction let it
		// change only its Node and the pods bound to it.
		if err := cp.WriteKubeconfig(cfg.KubeletKubeconfigPath(), "node-"+n.Name, "system:node:"+n.Name, []string{"system:nodes"}); err != nil {
			return nil, err
		}
		if err := cp.WriteKubeconfig(cfg.KubeProxyKubeconfigPath(), "kube-proxy", "system:kube-proxy", nil); err != nil {
			return nil, err
		}
		dir, crt, key, err := cp.IssueServingCert("kubelet-"+n.Name, n.IP, n.Name)
		if err != nil {
			return nil, err
		}
		boot, err := realnode.Prepare(cfg, realnode.Cluster{
			APIServer: cp.Server, CAFile: cp.CAFile, PodSubnet: podSubnet(i), ClusterCIDR: clusterCIDR,
			SandboxImage: sandbox, KubeletCert: filepath.Join(dir, crt), KubeletKey: filepath.Join(dir, key),
		})
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, realnode.Command(exe, n.Namespace, boot))
	}
	// deploy/'s host paths are these directories inside each node; their mount points
	// must exist on the machine.
	for _, d := range []string{realnode.NodeStateDir, realnode.StorageDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return cmds, nil
}

// podRoutes lets pods of different nodes, and the apiserver (its webhooks), reach each
// other: each node's pod subnet through that node's address, on the machine and in
// every other node.
func podRoutes(nodes []nodeNet) error {
	for i, n := range nodes {
		if err := ip("route", "replace", podSubnet(i), "via", n.IP, "dev", bridgeName); err != nil {
			return err
		}
		for j, other := range nodes {
			if i != j {
				if err := ip("-n", other.Namespace, "route", "replace", podSubnet(i), "via", n.IP, "dev", "eth0"); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// renderBase is `kustomize build deploy/base`, from the copy in the binary.
func renderBase() ([]*unstructured.Unstructured, error) {
	mem := filesys.MakeFsInMemory()
	err := fs.WalkDir(deploy.Base, "base", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := deploy.Base.ReadFile(path)
		if err != nil {
			return err
		}
		return mem.WriteFile("/"+path, data)
	})
	if err != nil {
		return nil, err
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, "/base")
	if err != nil {
		return nil, fmt.Errorf("kustomize build deploy/base: %w", err)
	}
	raw, err := res.AsYaml()
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs, nil
}

// adaptBase changes what `ferry up` must change in deploy/base, and nothing else:
//   - the agents feed each node's watchdog process (no kernel watchdog here);
//   - ferry-config's settings from ferry up's flags.
//
// It returns the image deploy/base names, which the nodes must have.
func adaptBase(objs []*unstructured.Unstructured, o Options) (image string, err error) {
	for _, u := range objs {
		switch {
		case u.GetKind() == "DaemonSet" && u.GetName() == "ferry-agent":
			containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			for _, c := range containers {
				cm := c.(map[string]any)
				args, _, _ := unstructured.NestedStringSlice(cm, "args")
				for i, a := range args {
					if strings.HasPrefix(a, "--watchdog=") {
						args[i] = "--watchdog=process:" + filepath.Join(realnode.NodeStateDir, "watchdog.sock")
					}
				}
				_ = unstructured.SetNestedStringSlice(cm, args, "args")
			}
			if err := unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers"); err != nil {
				return "", err
			}
		case u.GetKind() == "Deployment" && u.GetName() == "ferry-controller":
			// Both replicas stay: with one, a power loss of its node left the cluster
			// without a controller (so without fencing) until the node lifecycle
			// controller evicted the pod, 5 minutes on (measured: a VM back after 429 s).
			containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			if len(containers) > 0 {
				image, _, _ = unstructured.NestedString(containers[0].(map[string]any), "image")
			}
		case u.GetKind() == "ConfigMap" && u.GetName() == "ferry-config":
			for k, v := range map[string]string{
				"ipRange": o.IPRange, "vmNetwork": vmNetwork(true), "migrationTLS": strconv.FormatBool(o.MigrationTLS),
			} {
				if err := unstructured.SetNestedField(u.Object, v, "data", k); err != nil {
					return "", err
				}
			}
		}
	}
	if image == "" {
		return "", errors.New("deploy/base has no ferry-controller Deployment with an image")
	}
	return image, nil
}

// installBase applies deploy/base (server-side apply, as `kubectl apply --server-side
// -k` does): its CRDs and namespaces first, then the rest once the CRDs are served.
func installBase(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	first := func(u *unstructured.Unstructured) bool {
		return u.GetKind() == "CustomResourceDefinition" || u.GetKind() == "Namespace"
	}
	for _, pass := range []bool{true, false} {
		for _, u := range objs {
			if first(u) != pass {
				continue
			}
			u := u.DeepCopy()
			if err := c.Patch(ctx, u, client.Apply, client.FieldOwner("ferry-up"), client.ForceOwnership); err != nil {
				return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
			}
		}
		if pass {
			if err := waitCRDsEstablished(ctx, c, objs); err != nil {
				return err
			}
		}
	}
	return nil
}

func waitCRDsEstablished(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, u := range objs {
			if u.GetKind() != "CustomResourceDefinition" {
				continue
			}
			var got apiextensionsv1.CustomResourceDefinition
			if err := c.Get(ctx, client.ObjectKey{Name: u.GetName()}, &got); err != nil {
				return false, nil
			}
			ok := false
			for _, cond := range got.Status.Conditions {
				ok = ok || cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue
			}
			if !ok {
				return false, nil
			}
		}
		return true, nil
	})
}

// waitFerryRunning waits until the agent runs on every node and a controller replica is
// ready (its webhooks answer), saying what it waits for when that takes long.
func waitFerryRunning(ctx context.Context, c client.Client, nodes int, timeout time.Duration) error {
	last := ""
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var ds appsv1.DaemonSet
		if err := c.Get(ctx, client.ObjectKey{Namespace: "ferry-system", Name: "ferry-agent"}, &ds); err != nil {
			last = err.Error()
			return false, nil
		}
		var dep appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKey{Namespace: "ferry-system", Name: "ferry-controller"}, &dep); err != nil {
			last = err.Error()
			return false, nil
		}
		last = fmt.Sprintf("agents ready on %d of %d nodes, controller replicas ready %d", ds.Status.NumberReady, nodes, dep.Status.ReadyReplicas)
		return int(ds.Status.NumberReady) >= nodes && dep.Status.ReadyReplicas >= 1, nil
	})
	if err != nil {
		return fmt.Errorf("ferry did not come up on the nodes (%s): see `ferry k -n ferry-system get pods` and logs/node-*.log", last)
	}
	return nil
}

// serveGuestImage serves the sample guest image to the cluster's pods over HTTP at the
// machine's address on the nodes' bridge: the controller, in a pod, cannot read the
// machine's files.
func serveGuestImage(ctx context.Context, path string, port int) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(bridgeAddr, strconv.Itoa(port)))
	if err != nil {
		return "", err
	}
	name := "/" + filepath.Base(path)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != name {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, path)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	return "http://" + ln.Addr().String() + name, nil
}

// imagePort is where `ferry up --kubelet=real` serves the sample guest image.
func imagePort(apiPort int) int { return apiPort + 2005 }

// sampleURL is how the sample VM's image reaches the cluster: on real-kubelet nodes over
// HTTP from this machine, otherwise as a file (nil).
func sampleURL(ctx context.Context, o Options, say func(string, ...any)) func(string) (string, error) {
	if o.Kubelet != KubeletReal {
		return nil
	}
	return func(path string) (string, error) {
		url, err := serveGuestImage(ctx, path, imagePort(o.Port))
		if err == nil {
			say("Serving the guest image to the cluster at %s", url)
		}
		return url, err
	}
}
