package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ferryvm/ferry/api/crds"
	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/controller/migration"
	"github.com/ferryvm/ferry/internal/controller/storage"
	"github.com/ferryvm/ferry/internal/controlplane"
	"github.com/ferryvm/ferry/internal/ipam"
)

// Options configure `ferry up`.
type Options struct {
	StateDir string
	Nodes    int
	// NetNS puts each node in its own network namespace (needs root).
	NetNS bool
	Port  int
	// IPRange is the comma-separated list of VM address ranges (ipam.ParseRanges).
	IPRange  string
	SampleVM bool
	// NodeCPU and NodeMemory are what each node offers to VMs.
	NodeCPU    string
	NodeMemory string
	// FencingProfile is the watchdog profile of the nodes' NodeGroup ("" or "off": no fencing).
	FencingProfile string
	// MigrationTLS runs the nodes' agents with --migration-tls: live migrations over TLS.
	MigrationTLS bool
	// NoController leaves the controller out: another runs it, e.g. tests that run it on
	// the ServiceAccount token of deploy/base (test/deploy).
	NoController bool
	// NoCRDs installs none of Ferry's CRDs and no NodeGroup: the cluster gets them from an
	// install of deploy/, as a cluster of another release would (test/deploy's upgrade
	// test). It needs NoController, no nodes and no sample VM.
	NoCRDs bool
	// SplitAgent runs each node's agent as two processes, as on a real cluster: a
	// stand-in kubelet (agent --role=kubelet) and the agent proper (--role=handler).
	SplitAgent bool
	// Kubelet is KubeletStandIn (Ferry's stand-in kubelet runs the launcher pods as
	// processes) or KubeletReal: each node is a real kubelet with containerd and kube-proxy
	// in namespaces of its own, and Ferry runs on them from deploy/base, as on any cluster.
	Kubelet string
	// ImageSourceDirs are the directories the controller reads file:// images from
	// (its --image-source-dirs); nil: DefaultImageSourceDirs.
	ImageSourceDirs []string
	Out             io.Writer
}

// DefaultImageSourceDirs are where `ferry up`'s controller reads file:// images from
// unless told otherwise: the sample's guest image (the state directory's guest), the
// Debian guest of `make debian-guest` ($FERRY_GUEST_CACHE, else /var/cache/ferry/guests)
// and the benchmarks' guest image (the user's cache directory's ferry/guest).
func DefaultImageSourceDirs(stateDir string) []string {
	dirs := []string{filepath.Join(stateDir, "guest")}
	if d := os.Getenv("FERRY_GUEST_CACHE"); d != "" {
		dirs = append(dirs, d)
	} else {
		dirs = append(dirs, "/var/cache/ferry/guests")
	}
	if d, err := os.UserCacheDir(); err == nil {
		dirs = append(dirs, filepath.Join(d, "ferry", "guest"))
	}
	for i, d := range dirs {
		if abs, err := filepath.Abs(d); err == nil {
			dirs[i] = abs
		}
	}
	return dirs
}

// DefaultStateDir is /var/lib/ferry for root and ~/.local/share/ferry otherwise; the
// FERRY_STATE_DIR environment variable overrides it.
func DefaultStateDir() string {
	if d := os.Getenv("FERRY_STATE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/ferry"
	}
	if d, err := os.UserHomeDir(); err == nil {
		return filepath.Join(d, ".local", "share", "ferry")
	}
	return "ferry-state"
}

// KubeconfigPath is where `up` writes the admin kubeconfig of a state directory.
func KubeconfigPath(stateDir string) string {
	return filepath.Join(stateDir, "control-plane", "admin.kubeconfig")
}

// Run runs the cluster until SIGINT or SIGTERM, then stops all of it.
func Run(o Options) error {
	if o.Nodes < 0 || o.Nodes > 50 {
		return fmt.Errorf("--nodes must be between 0 and 50, not %d", o.Nodes)
	}
	vmRanges, err := ipam.ParseRanges(o.IPRange)
	if err != nil {
		return fmt.Errorf("--ip-range: %w", err)
	}
	if err := validProfile(o.FencingProfile); err != nil {
		return err
	}
	real := o.Kubelet == KubeletReal
	switch {
	case o.Kubelet != "" && o.Kubelet != KubeletStandIn && !real:
		return fmt.Errorf("--kubelet must be %s or %s, not %q", KubeletStandIn, KubeletReal, o.Kubelet)
	case real && (!o.NetNS || os.Geteuid() != 0):
		return errors.New("--kubelet=real needs root and node network namespaces (--netns)")
	case real && o.NoController:
		return errors.New("--kubelet=real runs the controller from deploy/base: --no-controller does not apply")
	case o.NoCRDs && (!o.NoController || o.Nodes != 0 || o.SampleVM):
		return errors.New("--no-crds makes a cluster without Ferry's CRDs: it needs --no-controller, --nodes 0 and --sample-vm=false")
	}
	if o.NetNS && os.Geteuid() != 0 {
		return errors.New("node network namespaces need root: run as root or pass --netns=false")
	}
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return err
	}
	unlock, err := lockState(o.StateDir)
	if err != nil {
		return err
	}
	defer unlock()
	exe, err := os.Executable()
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }
	started := time.Now()

	nodes := planNodes(o.Nodes, o.NetNS)
	if len(nodes) > 0 {
		if err := checkLightBinaries(exe); err != nil {
			return err
		}
	}
	bind := "127.0.0.1"
	if o.NetNS {
		// The bridge and the node namespaces have fixed names: one `ferry up` at a time.
		unlockNet, err := lockFile(filepath.Join(os.TempDir(), "ferry-netns.lock"), "another ferry up is using the node network namespaces (ferry-node-*): stop it first, or pass --netns=false")
		if err != nil {
			return err
		}
		defer unlockNet()
		if err := setupNetwork(nodes, vmRanges.Prefixes()); err != nil {
			return err
		}
		defer teardownNetwork(nodes)
		bind = bridgeAddr
	}

	say("Starting the control plane (state in %s)…", o.StateDir)
	cpOpts := controlplane.Options{
		DataDir:     filepath.Join(o.StateDir, "control-plane"),
		BindAddress: bind,
		SecurePort:  o.Port,
	}
	cp, err := controlplane.Start(ctx, cpOpts)
	if err != nil {
		if ctx.Err() != nil { // Ctrl-C while it started: a stop, not a failure
			say("Stopped before the control plane was ready.")
			return nil
		}
		return fmt.Errorf("starting the control plane: %w", err)
	}
	var cpMu sync.Mutex // cp changes when the control plane restarts
	stopCP := sync.OnceFunc(func() { cpMu.Lock(); _ = cp.Stop(3 * time.Second); cpMu.Unlock() })
	defer stopCP()
	say("Control plane ready at %s (%.1fs)", cp.Server, time.Since(started).Seconds())

	scheme := controller.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cp.RESTConfig, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if n, err := endLostLaunchers(ctx, c, nodes); err != nil {
		return err
	} else if n > 0 {
		say("Ended %d launcher pod(s) of the previous run: their processes stopped with it; the VMs start again by their runPolicy", n)
	}
	var base []*unstructured.Unstructured
	var realNodes [][]string
	if real {
		// Ferry as on any cluster: deploy/base, its controller and agents in pods.
		if err := podRoutes(nodes); err != nil {
			return fmt.Errorf("routing the nodes' pod networks: %w", err)
		}
		if base, err = renderBase(); err != nil {
			return err
		}
		image, err := adaptBase(base, o)
		if err != nil {
			return err
		}
		say("Preparing the nodes' images (%s)…", image)
		images, sandbox, err := nodeImages(ctx, o.StateDir, exe, image, say)
		if err != nil {
			return fmt.Errorf("preparing the nodes' images: %w", err)
		}
		if realNodes, err = prepareRealNodes(cp, exe, o.StateDir, nodes, images, sandbox); err != nil {
			return err
		}
		if err := installBase(ctx, c, base); err != nil {
			return fmt.Errorf("installing deploy/base: %w", err)
		}
		o.NoController = true
	} else {
		if !o.NoCRDs {
			if err := installCRDs(ctx, c); err != nil {
				return err
			}
		}
		// With --no-controller, Ferry is installed from deploy/ by its user, policy and
		// roles included: ferry up leaves them to that install.
		if !o.NoController {
			if err := installTenantBoundary(ctx, c); err != nil {
				return fmt.Errorf("installing deploy/base's tenant policy and roles: %w", err)
			}
		}
	}

	hookDir, hookCert, hookKey, err := cp.IssueServingCert("webhook", "127.0.0.1", "localhost")
	if err != nil {
		return fmt.Errorf("issuing the webhook certificate: %w", err)
	}
	if err := setupWebhooks(ctx, c, !o.NoController, webhookPort(o.Port), cp.CAData, say); err != nil {
		return err
	}

	sourceDirs := o.ImageSourceDirs
	if sourceDirs == nil {
		sourceDirs = DefaultImageSourceDirs(o.StateDir)
	}
	sourceDirsArg := storage.SourceDirsFlag + "=" + strings.Join(sourceDirs, ",")
	logs := filepath.Join(o.StateDir, "logs")
	storage := filepath.Join(o.StateDir, "storage")
	ctl := &child{name: "controller", log: filepath.Join(logs, "controller.log"), argv: []string{lightBinary(exe, ControllerBinary),
		"--kubeconfig", cp.Kubeconfig, "--storage-dir", storage, "--ip-range", o.IPRange, "--vm-network", vmNetwork(o.NetNS),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort(o.Port)),
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort(o.Port)+1),
		"--webhook-host", "127.0.0.1", "--webhook-port", strconv.Itoa(webhookPort(o.Port)),
		"--webhook-cert-dir", hookDir, "--webhook-cert-name", hookCert, "--webhook-key-name", hookKey}}
	ctl.argv = append(ctl.argv, sourceDirsArg)
	ctl.argv = append(ctl.argv, importGuardArgs(o.Port, cp.EtcdURL, o.NetNS)...)
	// Ferry's namespace: the controller keeps the migration CA there.
	for _, ns := range []string{migration.ConfigNamespace, v1alpha2.FencingLeaseNamespace} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating the namespace %s: %w", ns, err)
		}
	}
	if o.NoCRDs {
		// No NodeGroup CRD, so no group: there are no nodes either.
	} else if err := ensureNodeGroup(ctx, c, o.FencingProfile); err != nil {
		return fmt.Errorf("creating the NodeGroup %s: %w", nodeGroupName, err)
	}
	children := []*child{ctl}
	if o.NoController {
		children = nil
	}
	for i, n := range nodes {
		dir := NodeDir(o.StateDir, n.Name)
		// Nodes powered off in an earlier run boot with this one.
		_ = os.Remove(poweredOffFile(o.StateDir, n.Name))
		sock := filepath.Join(dir, "watchdog.sock")
		// The watchdog runs beside the node, not in its network namespace nor under its
		// agent: a node cut off or frozen cannot stop it.
		// A node powered off has no watchdog either, until it is powered on.
		children = append(children, &child{name: n.Name + " watchdog", log: filepath.Join(logs, n.Name+"-watchdog.log"),
			argv:      []string{lightBinary(exe, WatchdogBinary), "--node", n.Name, "--socket", sock, "--node-dir", dir},
			holdWhile: poweredOffFile(o.StateDir, n.Name)})
		if real {
			// The kubelet, kube-proxy, containerd and every pod of the node, the agent's
			// DaemonSet pod included, in the node's namespaces.
			children = append(children, &child{name: n.Name, argv: realNodes[i], log: filepath.Join(logs, n.Name+".log"),
				holdWhile: poweredOffFile(o.StateDir, n.Name)})
			continue
		}
		argv := []string{lightBinary(exe, AgentBinary), "--kubeconfig", cp.Kubeconfig, "--node-name", n.Name, "--node-ip", n.IP,
			"--state-dir", dir, "--cpu", o.NodeCPU, "--memory", o.NodeMemory,
			"--node-labels", deckhousev1.LabelNodeGroup + "=" + nodeGroupName, "--watchdog", "process:" + sock,
			"--peer-port", strconv.Itoa(peerPort(o.Port)), "--ip-range", o.IPRange, "--vm-network", vmNetwork(o.NetNS),
			"--migration-tls=" + strconv.FormatBool(o.MigrationTLS)}
		if n.Namespace != "" {
			argv = append(argv, "--vm-uplink", "eth0")
		}
		var kubeletArgv []string
		if o.SplitAgent {
			// As on a real cluster: a stand-in kubelet runs the launcher pods, and the agent
			// handles fencing and the VMs beside it.
			argv = append(argv, "--role=handler")
			kubeletArgv = []string{lightBinary(exe, AgentBinary), "--role=kubelet", "--kubeconfig", cp.Kubeconfig, "--node-name", n.Name, "--node-ip", n.IP,
				"--state-dir", dir, "--cpu", o.NodeCPU, "--memory", o.NodeMemory,
				"--node-labels", deckhousev1.LabelNodeGroup + "=" + nodeGroupName,
				"--migration-tls=" + strconv.FormatBool(o.MigrationTLS)}
		}
		for _, a := range []*[]string{&argv, &kubeletArgv} {
			if n.Namespace != "" && len(*a) > 0 {
				*a = append([]string{"ip", "netns", "exec", n.Namespace}, *a...)
			}
		}
		// A node powered off (ferry node poweroff) stays down until powered on.
		children = append(children, &child{name: n.Name, argv: argv, log: filepath.Join(logs, n.Name+".log"),
			holdWhile: poweredOffFile(o.StateDir, n.Name)})
		if kubeletArgv != nil {
			children = append(children, &child{name: n.Name + " kubelet", argv: kubeletArgv, log: filepath.Join(logs, n.Name+"-kubelet.log"),
				holdWhile: poweredOffFile(o.StateDir, n.Name)})
		}
	}
	for _, ch := range children {
		if err := ch.start(); err != nil {
			return err
		}
		go ch.supervise(func(msg string) { say("%s", msg) })
	}
	stopChildren := sync.OnceFunc(func() {
		// Agents first (they disarm their watchdogs as they stop), then the watchdogs.
		stopAll := func(watchdogs bool) {
			var wg sync.WaitGroup
			for _, ch := range children {
				if ch == ctl {
					continue
				}
				if strings.HasSuffix(ch.name, " watchdog") == watchdogs {
					wg.Go(func() { ch.stop(5 * time.Second) })
				}
			}
			wg.Wait()
		}
		stopAll(false)
		stopAll(true)
		ctl.stop(2 * time.Second)
	})
	defer stopChildren()

	if err := waitNodesReady(ctx, c, nodes); err != nil {
		return err
	}
	if real {
		say("%d node(s) Ready (%.1fs since start); waiting for Ferry's pods…", len(nodes), time.Since(started).Seconds())
		if err := waitFerryRunning(ctx, c, len(nodes), 5*time.Minute); err != nil {
			return err
		}
	}
	// The webhooks fail closed: VMs are created once the controller serves them.
	if !o.NoController {
		if err := waitControllerReady(ctx, metricsPort(o.Port)+1); err != nil {
			return err
		}
	}
	say("%d node(s) Ready (%.1fs since start)", len(nodes), time.Since(started).Seconds())

	if o.SampleVM && len(nodes) > 0 {
		if err := ensureSample(ctx, c, o.StateDir, sampleURL(ctx, o, say), say); err != nil {
			say("Could not create the sample VM: %v", err)
		}
	}
	startRegistry(ctx, o, say)
	printNext(o, cp.Kubeconfig, say)
	// SIGUSR1 restarts the apiserver and etcd (chaos runs): every client loses its
	// connections and watches for the time it takes.
	restart := make(chan os.Signal, 1)
	signal.Notify(restart, syscall.SIGUSR1)
	defer signal.Stop(restart)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-restart:
			say("SIGUSR1: restarting the control plane…")
			t := time.Now()
			cpMu.Lock()
			_ = cp.Stop(3 * time.Second)
			cp, err = controlplane.Start(ctx, cpOpts)
			cpMu.Unlock()
			if err != nil {
				stopChildren()
				return fmt.Errorf("restarting the control plane: %w", err)
			}
			say("Control plane restarted in %.1fs", time.Since(t).Seconds())
		}
	}

	say("Stopping Ferry…")
	t := time.Now()
	stopChildren()
	stopCP()
	if o.NetNS {
		teardownNetwork(nodes)
	}
	say("Stopped in %.1fs.", time.Since(t).Seconds())
	return nil
}

// peerPort is where the agents ask each other about the control plane: derived from the
// apiserver's port too, as nodes on loopback share their addresses with another cluster's.
func peerPort(apiPort int) int { return apiPort + 2003 }

// metricsPort is where the controller serves metrics: derived from the apiserver's port, so
// that two clusters on one machine (e.g. tests beside a developer's) do not collide.
func metricsPort(apiPort int) int { return apiPort + 2000 }

func printNext(o Options, kubeconfig string, say func(string, ...any)) {
	stateFlag := ""
	if o.StateDir != DefaultStateDir() {
		stateFlag = " --state-dir " + strconv.Quote(o.StateDir)
	}
	say(`
Ferry is up. In another terminal:
  ferry%[1]s k get nodes                 # the nodes
  ferry%[1]s k get vm                    # NAME PHASE NODE IPADDRESS AGE
  ferry%[1]s v console linux-vm          # the guest's serial console (Ctrl+] to leave)
  ferry%[1]s v stop|start|restart linux-vm --wait
  export KUBECONFIG=%[2]s   # for any other kubectl
Controller metrics: http://127.0.0.1:%[4]d/metrics. Logs are in %[3]s.
Press Ctrl-C to stop everything.`, stateFlag, kubeconfig, filepath.Join(o.StateDir, "logs"), metricsPort(o.Port))
}

// installCRDs applies Ferry's CRDs (server-side apply, so re-running updates them) and
// waits until the apiserver serves them.
func installCRDs(ctx context.Context, c client.Client) error {
	list, err := crds.All()
	if err != nil {
		return err
	}
	for _, crd := range list {
		if err := createOrUpdate(ctx, c, crd); err != nil {
			return fmt.Errorf("installing CRD %s: %w", crd.Name, err)
		}
	}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, crd := range list {
			var got apiextensionsv1.CustomResourceDefinition
			if err := c.Get(ctx, client.ObjectKey{Name: crd.Name}, &got); err != nil {
				return false, nil
			}
			established := false
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				return false, nil
			}
		}
		return true, nil
	})
}

// tenantBoundary are the objects of deploy/base that the stand-in's cluster takes too: what
// tenants may do (the roles aggregated to edit and view) and may not (write the pod labels
// and annotations through which Ferry commands its nodes). The rest of deploy/base runs
// Ferry in pods, which the stand-in does as processes.
var tenantBoundary = map[string]bool{
	"ValidatingAdmissionPolicy/ferry-launcher-pods":        true,
	"ValidatingAdmissionPolicyBinding/ferry-launcher-pods": true,
	"ClusterRole/ferry-tenant-edit":                        true,
	"ClusterRole/ferry-tenant-view":                        true,
	"ClusterRole/ferry-cluster-view":                       true,
}

// installTenantBoundary applies deploy/base's tenantBoundary objects, as deploy/base does
// on a cluster.
func installTenantBoundary(ctx context.Context, c client.Client) error {
	objs, err := renderBase()
	if err != nil {
		return err
	}
	n := 0
	for _, u := range objs {
		if !tenantBoundary[u.GetKind()+"/"+u.GetName()] {
			continue
		}
		n++
		if err := c.Patch(ctx, u, client.Apply, client.FieldOwner("ferry-up"), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	if n != len(tenantBoundary) {
		return fmt.Errorf("deploy/base has %d of the %d objects of the tenant boundary", n, len(tenantBoundary))
	}
	return nil
}

// createOrUpdate creates obj, or replaces the spec of an existing one.
func createOrUpdate(ctx context.Context, c client.Client, obj client.Object) error {
	err := c.Create(ctx, obj)
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	existing := obj.DeepCopyObject().(client.Object)
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), existing); err != nil {
		return err
	}
	obj.SetResourceVersion(existing.GetResourceVersion())
	return c.Update(ctx, obj)
}

func waitNodesReady(ctx context.Context, c client.Client, nodes []nodeNet) error {
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		for _, n := range nodes {
			var node corev1.Node
			if err := c.Get(ctx, client.ObjectKey{Name: n.Name}, &node); err != nil {
				return false, nil
			}
			ready := false
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready = true
				}
			}
			if !ready {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("nodes did not become Ready: %w (see the node logs)", err)
	}
	return nil
}

// lockState makes sure one `ferry up` at a time uses a state directory.
func lockState(dir string) (func(), error) {
	return lockFile(filepath.Join(dir, "ferry.lock"), "another ferry up is using "+dir)
}

// lockFile takes an exclusive lock on path for the life of the process, or says busy.
func lockFile(path, busy string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, errors.New(busy)
	}
	return func() { f.Close() }, nil
}

// waitControllerReady waits until the controller's /readyz answers (its webhooks serve).
func waitControllerReady(ctx context.Context, healthPort int) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort)
	hc := &http.Client{Timeout: 2 * time.Second}
	last := "no answer"
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		resp, err := hc.Get(url)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("the controller is not ready (%s: %s); see logs/controller.log", url, last)
	}
	return nil
}
