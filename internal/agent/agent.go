package agent

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/agent/deviceplugin"
	"github.com/ferryvm/ferry/internal/agent/kubelet"
	"github.com/ferryvm/ferry/internal/agent/migrationcert"
	"github.com/ferryvm/ferry/internal/hypervisor"
	"github.com/ferryvm/ferry/internal/ipam"
	"github.com/ferryvm/ferry/internal/launcher"
	"github.com/ferryvm/ferry/internal/migrationtls"
	"github.com/ferryvm/ferry/internal/vmnet"
	"github.com/ferryvm/ferry/internal/watchdog"
)

// Options configure one node's agent.
type Options struct {
	// Role is which parts of the node's work the agent does: kubelet.RoleAll under `ferry
	// up`, kubelet.RoleHandler beside a real kubelet (a DaemonSet on a cluster: fencing,
	// VM handler, migration certificate, the node's VM network; no Node registration, no
	// pods run), kubelet.RoleKubelet only the kubelet's part (a stand-in for a real kubelet
	// in tests of RoleHandler: no watchdog, no VM handling, no network set-up).
	Role     kubelet.Role
	NodeName string
	NodeIP   string
	Labels   map[string]string
	CPU      string
	Memory   string
	StateDir string
	// Watchdog is the fencing watchdog: "none", "process:SOCKET" (the per-node watchdog
	// process of `ferry up`), "device:PATH" (the kernel's, e.g. /dev/watchdog), or "auto"
	// ("auto:PATH"): device:/dev/watchdog (PATH) when that is a character device, else
	// none. An agent without a watchdog says on its Node that the node is never fenced
	// (condition v1alpha2.NodeConditionFencing False).
	Watchdog string
	// WatchdogDevice, if set, is the watchdog itself and Watchdog is ignored: simulated
	// nodes (their watchdog outlives the agent, as hardware does) and tests, whose watchdogs
	// reset nothing. No flag sets it; the Node says SimulatedWatchdog.
	WatchdogDevice Watchdog
	// PeerPort is where this agent answers the others about its contact with the control
	// plane (0: no peer checks); MaxUnreachable is the fencing controller's storm guard share.
	// Peers prove which node they are with the node's migration certificate, which the
	// agent then keeps whether or not MigrationTLS is on; until it has one, the node neither
	// answers nor asks, so a control-plane outage resets it as if it were cut off alone.
	PeerPort       int
	MaxUnreachable float64
	// NetworkDown, if set, tells a simulated node whose network is cut: its peer endpoint
	// then neither answers nor asks (its API requests fail in its rest.Config's transport).
	NetworkDown func() bool
	// VMRange, when set, is the comma-separated list of VM address ranges this node routes
	// VMs of (ipam.ParseRanges): the agent readies the node's network for them (package
	// vmnet) on VMUplink ("" the default route's link), every range on-link there.
	VMRange  string
	VMUplink string
	// Runtime, when set, runs the node's launcher pods instead of processes (simulated
	// nodes: many agents in one process, VMs in memory).
	Runtime kubelet.Runtime
	// MigrationTLS makes the node's live migrations TLS with certificates checked at both
	// ends: the agent keeps the node's migration certificate in StateDir/migration-tls
	// (package migrationcert) and tells its launchers, which refuse to migrate without
	// one. Off, migration streams are plain TCP (the certificate is still kept for the peer
	// checks, see PeerPort).
	MigrationTLS bool
	// DevicePluginDir, when set, is the kubelet's device-plugins directory: beside a real
	// kubelet the agent offers the node's /dev/net/tun and /dev/kvm there as extended
	// resources (package deviceplugin) for unprivileged launcher pods. Ferry's stand-in
	// kubelet has no device plugins.
	DevicePluginDir string
	Log             logr.Logger
}

// watchdogValues is what --watchdog takes. A watchdog that never resets the node (tests,
// simulated nodes) is no value of it: a node that shows an armed watchdog must be one that
// resets, so only Go code sets Options.WatchdogDevice.
const watchdogValues = "none, auto, auto:PATH, process:SOCKET or device:PATH"

// checkWatchdog refuses an Options.Watchdog that names no watchdog, whatever the agent's
// role, so that a wrong flag fails at start and not once the node relies on it.
func checkWatchdog(spec string) error {
	kind, arg, _ := strings.Cut(spec, ":")
	switch {
	case spec == "" || spec == "none" || kind == "auto":
		return nil
	case (kind == "process" || kind == "device") && arg != "":
		return nil
	case spec == "fake":
		return fmt.Errorf("--watchdog %q: want %s (a fake watchdog never resets the node, which would look fenced and never be: it is for tests and simulated nodes, which set theirs in code)", spec, watchdogValues)
	}
	return fmt.Errorf("--watchdog %q: want %s", spec, watchdogValues)
}

// openWatchdog makes the watchdog an Options.Watchdog names (auto resolved); nil for "none".
func openWatchdog(spec string) (Watchdog, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch {
	case spec == "" || spec == "none":
		return nil, nil
	case kind == "process" && arg != "":
		return watchdog.DialProcess(arg), nil
	case kind == "device" && arg != "":
		return watchdog.NewDevice(arg), nil
	}
	return nil, fmt.Errorf("--watchdog %q: want %s", spec, watchdogValues)
}

// The agent watches its own Node and the NodeGroups for fencing settings; it also rereads
// them every fencingResync (a missed event, a failed write), and the other nodes'
// addresses every peersRefresh. Polling instead cost 1 request per second per node,
// the largest share of the apiserver's load at 100 nodes.
const (
	fencingResync = 30 * time.Second
	peersRefresh  = 30 * time.Second
)

// watchFencing starts a cache of this node's Node object and all NodeGroups, and returns
// a client that reads from it and a channel that receives when either changes.
func watchFencing(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, node string) (client.Client, <-chan struct{}, error) {
	own := fields.OneTermEqualSelector("metadata.name", node)
	ca, err := cache.New(cfg, cache.Options{Scheme: scheme, ByObject: map[client.Object]cache.ByObject{
		&corev1.Node{}: {Field: own},
	}})
	if err != nil {
		return nil, nil, err
	}
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	h := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	for _, obj := range []client.Object{&corev1.Node{}, &deckhousev1.NodeGroup{}} {
		inf, err := ca.GetInformer(ctx, obj)
		if err != nil {
			return nil, nil, err
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return nil, nil, err
		}
	}
	go func() { _ = ca.Start(ctx) }()
	if !ca.WaitForCacheSync(ctx) {
		return nil, nil, fmt.Errorf("watching the Node and NodeGroups: %w", context.Cause(ctx))
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: ca}})
	if err != nil {
		return nil, nil, err
	}
	return c, changed, nil
}

// Run runs the node until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	if o.WatchdogDevice == nil {
		if err := checkWatchdog(o.Watchdog); err != nil {
			return err
		}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// Launcher pods run ferry-launcher, installed beside ferry (make build, the node image),
	// or ferry itself (`ferry launcher`, pods of releases before ferry-launcher).
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	// What the node offers is the kubelet's to report.
	var cpu, mem resource.Quantity
	if o.Role.PlaysKubelet() {
		if cpu, err = resource.ParseQuantity(o.CPU); err != nil {
			return fmt.Errorf("--cpu: %w", err)
		}
		if mem, err = resource.ParseQuantity(o.Memory); err != nil {
			return fmt.Errorf("--memory: %w", err)
		}
	}
	handler := o.Role.HandlesVMs()
	var wd Watchdog = o.WatchdogDevice
	wdSpec, absent := o.Watchdog, ""
	if wd == nil && handler {
		if wdSpec, absent = resolveWatchdog(o.Watchdog); absent != "" {
			o.Log.Info("No watchdog device: this node runs without a watchdog and is never fenced", "watchdog", o.Watchdog, "why", absent)
		} else if wdSpec != o.Watchdog {
			o.Log.Info("Watchdog found", "watchdog", o.Watchdog, "using", wdSpec)
		}
		if wd, err = openWatchdog(wdSpec); err != nil {
			return err
		}
	}
	// What the agent says on its Node: whether the node can be fenced.
	cond := watchdogCondition(wdSpec, wd, absent)
	if o.VMRange != "" && handler {
		r, err := ipam.ParseRanges(o.VMRange)
		if err != nil {
			return err
		}
		uplink, err := vmnet.PrepareNode(r.Prefixes(), o.VMUplink)
		if err != nil {
			return err
		}
		o.Log.Info("VM network ready", "ranges", r.String(), "uplink", uplink)
	}
	// The node's certificate (migration-tls in the state directory) is also its identity
	// towards its peers: the keeper runs when migrations use TLS or the node asks peers.
	dir := filepath.Join(o.StateDir, migrationtls.DirName)
	var f *fencer
	var onRenew func(time.Time, time.Duration)
	var peerReader client.Reader
	var fencingScheme *runtime.Scheme
	if wd != nil {
		scheme := runtime.NewScheme()
		_ = clientgoscheme.AddToScheme(scheme)
		_ = deckhousev1.AddToScheme(scheme)
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		if err != nil {
			return err
		}
		f = &fencer{c: c, node: o.NodeName, wd: wd, log: o.Log.WithName("fencing"), defaultInterval: kubelet.DefaultLeaseInterval,
			spec: wdSpec, cond: cond}
		if o.PeerPort > 0 {
			f.peers = &peers{self: o.NodeName, port: o.PeerPort, maxUnreachable: o.MaxUnreachable, reachable: f.controlPlaneReachable, down: o.NetworkDown,
				creds: func() (*migrationtls.Credentials, error) { return migrationtls.Load(dir) }}
		}
		onRenew = f.renewed
		peerReader = c
		fencingScheme = scheme
	}
	var launcherEnv []string
	if o.MigrationTLS && o.Role.PlaysKubelet() {
		// The launchers find the node's certificate where the VM handler keeps it (the
		// same state directory when the two parts run apart).
		launcherEnv = append(launcherEnv, migrationtls.EnvDir+"="+dir)
	}
	peerChecks := f != nil && f.peers != nil
	if handler && (o.MigrationTLS || peerChecks) {
		if !o.MigrationTLS && o.Runtime == nil {
			o.Log.Info("Migration TLS is off, but the node's certificate is its identity in the peer checks: keeping one all the same", "dir", dir)
		}
		mctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			migrationcert.Run(mctx, migrationcert.Options{Client: cs, Node: o.NodeName, Dir: dir, Log: o.Log.WithName("migration-tls")})
		})
		defer func() { cancel(); wg.Wait() }()
	}
	if o.Runtime == nil && !o.MigrationTLS {
		o.Log.Info("Migration TLS is off: this node's live migrations go over plain TCP")
	}
	ko := kubelet.Options{
		Role:               o.Role,
		LauncherEnv:        launcherEnv,
		OnLeaseRenewed:     onRenew,
		NodeName:           o.NodeName,
		NodeIP:             o.NodeIP,
		Labels:             o.Labels,
		CPU:                cpu,
		Memory:             mem,
		StateDir:           o.StateDir,
		Executable:         exe,
		LauncherExecutable: filepath.Join(filepath.Dir(exe), kubelet.LauncherCommand),
		Runtime:            o.Runtime,
		Probe:              probeLauncher,
		Migrate: func(ctx context.Context, runDir string, r v1alpha2.MigrationRequest) error {
			return launcher.StartMigration(ctx, runDir, launcher.MigrationRequest{
				URI: r.URI, TargetNode: r.TargetNode, MaxBandwidthBytes: r.MaxBandwidthBytes, DowntimeLimitMs: r.DowntimeLimitMs,
				AutoConverge: r.AutoConverge, CompletionTimeoutSeconds: r.CompletionTimeoutSeconds,
				ProgressTimeoutSeconds: r.ProgressTimeoutSeconds, BlockDevices: migrationBlockDevices(r.BlockDevices),
			})
		},
		CancelMigration: launcher.CancelMigration,
		FinalMigration: func(runDir string) (*v1alpha2.MigrationProgress, error) {
			m, err := launcher.FinalMigration(runDir)
			if err != nil {
				return nil, err
			}
			return progressOf(m), nil
		},
		Hotplug: hotplugLauncher,
		Log:     o.Log,
	}
	if !handler {
		ko.Probe, ko.Migrate, ko.CancelMigration, ko.FinalMigration, ko.Hotplug = nil, nil, nil, nil, nil
	}
	k := kubelet.New(cs, ko)
	if handler && o.Runtime == nil {
		// What the node's QEMU offers a guest, as Node labels for the classes' placement:
		// probed beside the node's start (QEMU takes a moment), not before it.
		c, err := client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme})
		if err != nil {
			return err
		}
		lctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		probe := func(ctx context.Context) (hypervisor.CPUOffer, error) {
			ctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			return hypervisor.ProbeCPU(ctx, "", "")
		}
		wg.Go(func() { keepCPULabels(lctx, c, o.NodeName, probe, fencingResync, o.Log.WithName("cpu")) })
		defer func() { cancel(); wg.Wait() }()
	}
	leaseNamespace := corev1.NamespaceNodeLease
	if o.Role == kubelet.RoleHandler {
		leaseNamespace = v1alpha2.FencingLeaseNamespace
	}
	if err := awaitFencing(ctx, cs, o.NodeName, filepath.Join(o.StateDir, ResetMarker), leaseNamespace, handler, o.Log); err != nil {
		return err
	}
	// The devices only once the node has rejoined: a node its watchdog reset offers the
	// scheduler no launcher pod's devices, so no VM, until the cluster has fenced it.
	if o.DevicePluginDir != "" && handler {
		devs, leftOut := deviceplugin.NodeDevices()
		for _, why := range leftOut {
			o.Log.Info("Device not offered to launcher pods", "why", why)
		}
		dctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			err := deviceplugin.Run(dctx, deviceplugin.Options{Dir: o.DevicePluginDir, Devices: devs, Log: o.Log.WithName("device-plugin")})
			if err != nil {
				o.Log.Error(err, "Device plugins stopped")
			}
		})
		defer func() { cancel(); wg.Wait() }()
	}
	if f != nil {
		f.interval = k.SetLeaseInterval
		fctx, cancel := context.WithCancel(ctx)
		cached, changed, err := watchFencing(fctx, cfg, fencingScheme, o.NodeName)
		if err != nil {
			cancel()
			return err
		}
		f.c = cached
		var wg sync.WaitGroup
		wg.Go(func() { f.run(fctx, changed, fencingResync) })
		if f.peers != nil {
			wg.Go(func() { f.peers.keepFresh(fctx, peerReader, peersRefresh, f.log) })
			wg.Go(func() {
				if err := f.peers.serve(fctx, net.JoinHostPort(o.NodeIP, strconv.Itoa(o.PeerPort)), f.log); err != nil {
					o.Log.Error(err, "Peers cannot ask this node about the control plane")
				}
			})
			wg.Go(func() { f.watchOutage(fctx) })
		}
		defer func() { cancel(); wg.Wait() }()
	} else if handler {
		// No watchdog: the Node says so, so that no one counts on this node being fenced.
		c, err := client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme})
		if err != nil {
			return err
		}
		cctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { keepUnfencedCondition(cctx, c, o.NodeName, cond, fencingResync, o.Log.WithName("fencing")) })
		defer func() { cancel(); wg.Wait() }()
	}
	return k.Run(ctx)
}

// probeLauncher is the VM handler's question to a launcher: how is the guest?
func probeLauncher(ctx context.Context, runDir string) (kubelet.GuestState, error) {
	st, err := launcher.StatusOf(ctx, runDir)
	if err != nil {
		return kubelet.GuestState{}, err
	}
	g := kubelet.GuestState{QEMU: st.QEMU, IncomingURI: st.IncomingURI}
	if st.Fault != nil {
		g.Fault = &kubelet.GuestFault{Reason: st.Fault.Reason, Message: st.Fault.Message}
	}
	if st.Agent != nil && st.Agent.Connected {
		g.Agent = guestReport(st.Agent.Report)
	}
	if st.Migration != nil {
		g.Migration = progressOf(st.Migration)
	}
	for _, b := range st.BlockDevices {
		g.BlockDevices = append(g.BlockDevices, v1alpha2.HotplugDeviceStatus{
			HotplugDevice: v1alpha2.HotplugDevice{Slot: b.Slot, Name: b.Name, Path: b.Path, Format: b.Format, ReadOnly: b.ReadOnly},
			Target:        b.Target, State: b.State, Error: b.Error,
		})
	}
	return g, nil
}

// guestReport is the API's copy of a launcher's guest agent report (nil: an empty one).
func guestReport(r *launcher.GuestReport) *v1alpha2.GuestAgentReport {
	out := &v1alpha2.GuestAgentReport{}
	if r == nil {
		return out
	}
	out.Hostname = r.Hostname
	if r.OS != nil {
		info := v1alpha2.GuestOSInfo(*r.OS)
		out.OS = &info
	}
	for _, i := range r.Interfaces {
		out.Interfaces = append(out.Interfaces, v1alpha2.GuestInterface(i))
	}
	return out
}

// hotplugLauncher is the VM handler's request to a launcher: have these disks hot-plugged.
func hotplugLauncher(ctx context.Context, runDir string, devs []v1alpha2.HotplugDevice) error {
	out := make([]launcher.BlockDevice, 0, len(devs))
	for _, d := range devs {
		out = append(out, launcher.BlockDevice{Slot: d.Slot, Name: d.Name, Path: d.Path, Format: d.Format, ReadOnly: d.ReadOnly})
	}
	return launcher.SetBlockDevices(ctx, runDir, out)
}

func migrationBlockDevices(in []v1alpha2.HotplugSlot) []launcher.MigrationBlockDevice {
	var out []launcher.MigrationBlockDevice
	for _, d := range in {
		out = append(out, launcher.MigrationBlockDevice{Slot: d.Slot, Path: d.Path})
	}
	return out
}

func progressOf(m *launcher.MigrationStatus) *v1alpha2.MigrationProgress {
	return &v1alpha2.MigrationProgress{
		URI: m.URI, Status: m.Status, TotalTimeMs: m.TotalTimeMs, DowntimeMs: m.DowntimeMs,
		TransferredBytes: m.TransferredBytes, RemainingBytes: m.RemainingBytes, TotalBytes: m.TotalBytes,
		DirtySyncCount: m.DirtySyncCount, ThrottlePercent: m.ThrottlePercent, Error: m.Error,
	}
}
