package controller

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	deckhousev1 "github.com/ferryvm/ferry/api/deckhouse/v1"
	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/evacuation"
	"github.com/ferryvm/ferry/internal/controller/fencing"
	"github.com/ferryvm/ferry/internal/controller/ipaddress"
	"github.com/ferryvm/ferry/internal/controller/macaddress"
	"github.com/ferryvm/ferry/internal/controller/migration"
	"github.com/ferryvm/ferry/internal/controller/migrationsigner"
	"github.com/ferryvm/ferry/internal/controller/ownwrites"
	"github.com/ferryvm/ferry/internal/controller/power"
	"github.com/ferryvm/ferry/internal/controller/restore"
	"github.com/ferryvm/ferry/internal/controller/storage"
	"github.com/ferryvm/ferry/internal/controller/usbdevice"
	"github.com/ferryvm/ferry/internal/controller/vm"
	"github.com/ferryvm/ferry/internal/controller/vmbda"
	"github.com/ferryvm/ferry/internal/controller/vmclass"
	"github.com/ferryvm/ferry/internal/controller/vmpool"
	"github.com/ferryvm/ferry/internal/controller/vmsnapshot"
	"github.com/ferryvm/ferry/internal/ipam"
	"github.com/ferryvm/ferry/internal/launcherpod"
	"github.com/ferryvm/ferry/internal/netguard"
	"github.com/ferryvm/ferry/internal/webhookcert"
)

// Options configure the controller process.
type Options struct {
	// StorageDir is the shared storage that holds images and disks.
	StorageDir string
	// MaxImageSize caps the bytes one image import may download (0: 64 GiB).
	MaxImageSize int64
	// ImageSourceDirs are the directories file:// image URLs may read from (none: file://
	// is refused).
	ImageSourceDirs []string
	// ImportDestinations are the addresses image and disk imports (HTTP, ContainerImage)
	// may connect to (nil: netguard.Default()).
	ImportDestinations *netguard.Policy
	// ImportDenyNodes adds the cluster's nodes' addresses (but loopback ones) to
	// ImportDestinations' denied networks, as the nodes are when an import connects.
	ImportDenyNodes bool
	// Upload configures the upload endpoint of images and disks with dataSource.type Upload.
	Upload UploadOptions
	// IPRange is the comma-separated list of CIDRs that VM addresses come from, in
	// allocation order (ipam.ParseRanges).
	IPRange string
	// IPLeaseRetention is how long a released address lease stays for its namespace
	// before it is deleted (0: ten minutes, as Deckhouse).
	IPLeaseRetention time.Duration
	// VMNetwork is NetworkRouted (each VM gets a NIC, its address routed to its node) or
	// NetworkNone (VMs hold an address but have no NIC).
	VMNetwork string
	// LauncherImage is the container image of launcher pods on a real cluster.
	LauncherImage string
	// NodeStateDir is the node agents' --state-dir, which launcher pods mount their run
	// directory and the node's migration certificate from.
	NodeStateDir string
	// MigrationTLS makes launchers migrate only over TLS (the agents' --migration-tls).
	MigrationTLS bool
	// LauncherDevices is how launcher pods get the node's /dev/net/tun and /dev/kvm:
	// DevicesPrivileged ("" too) or DevicesPlugin (the agents' --device-plugin-dir).
	LauncherDevices string
	// LauncherKVM is when launcher pods request /dev/kvm with DevicesPlugin: vm.KVMAuto
	// ("" too), vm.KVMRequire or vm.KVMOff.
	LauncherKVM string
	// MetricsAddr serves Prometheus metrics ("0" turns them off).
	MetricsAddr string
	// HealthAddr serves /healthz and /readyz ("0" turns them off).
	HealthAddr string
	// PprofAddr serves Go's profiles (/debug/pprof); "" turns them off.
	PprofAddr string
	// Migration tunes live migrations.
	Migration migration.Config
	// Webhook serves the admission webhooks over TLS; Port 0 turns them off.
	Webhook WebhookOptions
	// FencingMaxUnreachable is the share of nodes beyond which no node is fenced.
	FencingMaxUnreachable float64
	// LeaderElection makes replicas elect one active controller.
	LeaderElection          bool
	LeaderElectionNamespace string
}

// UploadOptions say where the upload endpoint serves and which URLs status shows.
type UploadOptions struct {
	// Addr is a listener of the endpoint's own, in plain HTTP (tests; a proxy that
	// terminates TLS in front); "" serves it on the webhook server (TLS, the webhooks'
	// certificate) when that runs.
	Addr string
	// ExternalURL is the base (https://host:port) of status.imageUploadURLs.external;
	// "": the webhook server's own address when it listens on one host (ferry up's
	// loopback), or Addr's listener.
	ExternalURL string
	// InClusterURL is the base of status.imageUploadURLs.inCluster; "": the controller's
	// webhook Service (DefaultUploadInClusterURL) when the webhook server listens on every
	// address, as in a pod, else none.
	InClusterURL string
}

// DefaultUploadInClusterURL is deploy/base's webhook Service, which the upload endpoint
// shares with the admission webhooks.
const DefaultUploadInClusterURL = "https://ferry-controller-webhook.ferry-system.svc"

// WebhookOptions say where the admission webhooks listen and which certificate they show.
type WebhookOptions struct {
	Host     string
	Port     int
	CertDir  string
	CertName string
	KeyName  string
	// CertMode is CertModeFiles ("" too) or CertModeSelf.
	CertMode string
	// Certs configure CertModeSelf; the files are CertDir, CertName and KeyName.
	Certs webhookcert.Options
}

// NewScheme returns a scheme with the Kubernetes and Ferry types.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha2.AddToScheme(s)
	_ = deckhousev1.AddToScheme(s)
	return s
}

// The VM network modes (Options.VMNetwork).
const (
	NetworkRouted = v1alpha2.VMNetworkRouted
	NetworkNone   = v1alpha2.VMNetworkNone
)

// How launcher pods get the node's devices (Options.LauncherDevices).
const (
	// DevicesPrivileged: privileged containers, which see every device of the node (Ferry's
	// stand-in kubelet, `ferry up`, runs launchers as processes and has no device plugins).
	DevicesPrivileged = "privileged"
	// DevicesPlugin: unprivileged containers that request the devices from the node agents'
	// device plugin (vm.Devices).
	DevicesPlugin = "plugin"
)

// Run starts every controller and blocks until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	r, err := ipam.ParseRanges(o.IPRange)
	if err != nil {
		return err
	}
	if o.VMNetwork == "" {
		o.VMNetwork = NetworkRouted
	}
	if o.VMNetwork != NetworkRouted && o.VMNetwork != NetworkNone {
		return fmt.Errorf("VM network mode %q: use %s or %s", o.VMNetwork, NetworkRouted, NetworkNone)
	}
	devices, err := launcherDevices(o.LauncherDevices, o.LauncherKVM)
	if err != nil {
		return err
	}
	// First what the install lacks: on another release's manifests the webhooks' certificate
	// (self mode) would otherwise stop at the first grant it lacks (the configurations it
	// keeps), and say less.
	if err := preflight(ctx, cfg, neededResources); err != nil {
		return err
	}
	var hooks webhook.Server
	var certs *webhookcert.Rotator
	if o.Webhook.Port > 0 {
		switch o.Webhook.CertMode {
		case "", CertModeFiles:
		case CertModeSelf:
			if certs, err = selfManagedCerts(ctx, cfg, o.Webhook); err != nil {
				return err
			}
		default:
			return fmt.Errorf("webhook certificate mode %q: use %s or %s", o.Webhook.CertMode, CertModeSelf, CertModeFiles)
		}
		for _, f := range []string{o.Webhook.CertName, o.Webhook.KeyName} {
			if _, err := os.Stat(filepath.Join(o.Webhook.CertDir, f)); err != nil {
				return fmt.Errorf("the admission webhooks need their serving certificate: %w (pass --webhook-cert-dir, or --webhook-port 0 to run without them: kubectl drain then kills VMs instead of moving them)", err)
			}
		}
		hooks = webhook.NewServer(webhook.Options{Host: o.Webhook.Host, Port: o.Webhook.Port,
			CertDir: o.Webhook.CertDir, CertName: o.Webhook.CertName, KeyName: o.Webhook.KeyName})
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		WebhookServer:           hooks,
		Scheme:                  NewScheme(),
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.HealthAddr,
		PprofBindAddress:        o.PprofAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        "ferry-controller",
		LeaderElectionNamespace: o.LeaderElectionNamespace,
		// Reads from the cache wait for this process's own writes (ownwrites).
		NewClient: func(cfg *rest.Config, opts client.Options) (client.Client, error) {
			c, err := client.New(cfg, opts)
			if err != nil {
				return nil, err
			}
			return ownwrites.Wrap(c), nil
		},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			// Only launcher pods matter to Ferry; do not cache every pod of the cluster.
			&corev1.Pod{}: {Label: launcherSelector()},
			// Only node heartbeats, not every lease of the cluster.
			&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{corev1.NamespaceNodeLease: {}, v1alpha2.FencingLeaseNamespace: {}}},
		}},
	})
	if err != nil {
		return fmt.Errorf("creating the controller manager: %w", err)
	}
	if o.ImportDestinations != nil && o.ImportDenyNodes {
		o.ImportDestinations.DeniedHosts = nodeAddresses(mgr.GetCache())
		o.ImportDestinations.DeniedHostsWhat = "a node's address (--import-deny-node-addresses)"
	}
	if err := power.IndexOperations(ctx, mgr); err != nil {
		return err
	}
	if err := launcherpod.Index(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	if err := ipaddress.Setup(ctx, mgr, r, o.IPLeaseRetention, hooks != nil); err != nil {
		return err
	}
	if err := macaddress.Setup(ctx, mgr); err != nil {
		return err
	}
	if err := usbdevice.Setup(mgr); err != nil {
		return err
	}
	uploads, err := setupUploads(mgr, o, hooks != nil)
	if err != nil {
		return err
	}
	if err := vm.IndexAttachments(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	setups := []interface{ SetupWithManager(ctrl.Manager) error }{
		&vm.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("virtualmachine-controller"), Ranges: r, LauncherImage: o.LauncherImage,
			Node: vm.NodeSide{StateDir: o.NodeStateDir, StorageDir: o.StorageDir, MigrationTLS: o.MigrationTLS}, Network: o.VMNetwork == NetworkRouted,
			Devices:   devices,
			APIReader: mgr.GetAPIReader()},
		&storage.ImageReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("image-controller"), Root: o.StorageDir, MaxImageSize: o.MaxImageSize,
			SourceDirs: o.ImageSourceDirs, Destinations: o.ImportDestinations, APIReader: mgr.GetAPIReader(), Uploads: uploads},
		&storage.ImageReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("image-controller"), Root: o.StorageDir, MaxImageSize: o.MaxImageSize,
			SourceDirs: o.ImageSourceDirs, Destinations: o.ImportDestinations, APIReader: mgr.GetAPIReader(), Uploads: uploads, Namespaced: true},
		&storage.DiskReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("disk-controller"), Root: o.StorageDir, APIReader: mgr.GetAPIReader(),
			MaxImageSize: o.MaxImageSize, SourceDirs: o.ImageSourceDirs, Destinations: o.ImportDestinations, Uploads: uploads},
		&storage.SnapshotReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("snapshot-controller"), Root: o.StorageDir, APIReader: mgr.GetAPIReader()},
		&vmsnapshot.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmsnapshot-controller"), APIReader: mgr.GetAPIReader()},
		&restore.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmop-restore-controller"), APIReader: mgr.GetAPIReader()},
		&restore.CloneReconciler{Reconciler: restore.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmop-clone-controller"), APIReader: mgr.GetAPIReader()}},
		&restore.SnapshotOperationReconciler{Reconciler: restore.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmsop-controller"), APIReader: mgr.GetAPIReader()}},
		&power.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmop-controller")},
		&vmbda.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("vmbda-controller"), StorageDir: o.StorageDir, APIReader: mgr.GetAPIReader()},
		&migration.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("migration-controller"), Config: o.Migration, APIReader: mgr.GetAPIReader()},
		&vmclass.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Namespace: migration.ConfigNamespace},
		&vmpool.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorderFor("vmpool-controller")},
		&evacuation.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("evacuation-controller")},
		&fencing.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorderFor("fencing-controller"), MaxUnreachable: o.FencingMaxUnreachable},
		&migrationsigner.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorderFor("migration-signer"),
			Namespace: migration.ConfigNamespace, Policy: migrationsigner.Policy{AgentUser: migrationsigner.AgentUser(migration.ConfigNamespace)}},
	}
	for _, s := range setups {
		if err := s.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	// The Deployment's liveness probe (deploy/base/controller.yaml): the process answers.
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if hooks != nil {
		// Asking the manager for its webhook server is what makes it run the server.
		mgr.GetWebhookServer().Register(vm.WebhookPath, &webhook.Admission{Handler: &vm.Webhook{APIReader: mgr.GetAPIReader(), Ranges: r, Decoder: admission.NewDecoder(mgr.GetScheme())}})
		mgr.GetWebhookServer().Register(vm.DefaultingPath, &webhook.Admission{Handler: &vm.Defaulter{APIReader: mgr.GetAPIReader()}})
		mgr.GetWebhookServer().Register(vmclass.WebhookPath, &webhook.Admission{Handler: &vmclass.Webhook{APIReader: mgr.GetAPIReader(), Decoder: admission.NewDecoder(mgr.GetScheme())}})
		mgr.GetWebhookServer().Register(evacuation.WebhookPath, &webhook.Admission{Handler: &evacuation.Webhook{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Backoff: evacuation.DefaultBackoff}})
		if err := mgr.AddReadyzCheck("webhook", hooks.StartedChecker()); err != nil {
			return err
		}
	}
	if certs != nil {
		if err := mgr.Add(certs); err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// setupUploads makes the upload endpoint of images and disks and serves it on the
// webhook server (TLS) when that runs, and on a listener of its own with
// Options.Upload.Addr.
func setupUploads(mgr ctrl.Manager, o Options, webhooks bool) (*storage.Uploads, error) {
	u := &storage.Uploads{Reader: mgr.GetAPIReader(), Root: o.StorageDir, MaxSize: o.MaxImageSize,
		ExternalURL: o.Upload.ExternalURL, InClusterURL: o.Upload.InClusterURL}
	if o.Upload.Addr != "" {
		l, err := net.Listen("tcp", o.Upload.Addr)
		if err != nil {
			return nil, fmt.Errorf("the upload endpoint: %w", err)
		}
		if u.ExternalURL == "" {
			u.ExternalURL = "http://" + l.Addr().String()
		}
		if err := mgr.Add(storage.Server{Listener: l, Handler: u}); err != nil {
			return nil, err
		}
	}
	if webhooks {
		if u.ExternalURL == "" && o.Webhook.Host != "" {
			u.ExternalURL = "https://" + net.JoinHostPort(o.Webhook.Host, strconv.Itoa(o.Webhook.Port))
		}
		if u.InClusterURL == "" && o.Webhook.Host == "" {
			// Listening on every address, as in deploy/base's pod behind its Service; a
			// controller on one host (ferry up's loopback) has no Service.
			u.InClusterURL = DefaultUploadInClusterURL
		}
		mgr.GetWebhookServer().Register(storage.UploadPathPrefix, u)
	} else {
		// No Service in front of a controller without its webhook server.
		u.InClusterURL = ""
	}
	return u, nil
}

// launcherDevices checks Options.LauncherDevices and LauncherKVM.
func launcherDevices(mode, kvm string) (vm.Devices, error) {
	var d vm.Devices
	switch mode {
	case "", DevicesPrivileged:
	case DevicesPlugin:
		d.Plugin = true
	default:
		return d, fmt.Errorf("launcher devices %q: use %s or %s", mode, DevicesPrivileged, DevicesPlugin)
	}
	switch kvm {
	case "", vm.KVMAuto, vm.KVMRequire, vm.KVMOff:
		d.KVM = kvm
	default:
		return d, fmt.Errorf("launcher KVM %q: use %s, %s or %s", kvm, vm.KVMAuto, vm.KVMRequire, vm.KVMOff)
	}
	return d, nil
}

func launcherSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{v1alpha2.LabelLauncher: "virt-launcher"})
}

// nodeAddresses lists the nodes' addresses from the cache, for the import policy: a
// node's kubelet, agent and host services listen there. Loopback addresses are left out:
// ferry up's nodes without network namespaces share the machine's loopback, whose
// services ferry up denies port by port.
func nodeAddresses(r client.Reader) func() []netip.Addr {
	return func() []netip.Addr {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var nodes corev1.NodeList
		if err := r.List(ctx, &nodes); err != nil {
			return nil
		}
		var out []netip.Addr
		for _, n := range nodes.Items {
			for _, a := range n.Status.Addresses {
				if ip, err := netip.ParseAddr(a.Address); err == nil && !ip.IsLoopback() {
					out = append(out, ip)
				}
			}
		}
		return out
	}
}
