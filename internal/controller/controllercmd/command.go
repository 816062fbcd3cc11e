// Package controllercmd is the controller's command line, shared by `ferry controller` (the
// Deployment's process) and ferry-controller (ferry up's: the same command in a binary that
// links Kubernetes' client but not its control plane, so that it starts small).
package controllercmd

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ferryvm/ferry/internal/logtime"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
	"github.com/ferryvm/ferry/internal/controller/fencing"
	"github.com/ferryvm/ferry/internal/controller/migration"
	"github.com/ferryvm/ferry/internal/controller/storage"
	"github.com/ferryvm/ferry/internal/controller/vm"
	"github.com/ferryvm/ferry/internal/ipam"
	"github.com/ferryvm/ferry/internal/netguard"
	"github.com/ferryvm/ferry/internal/webhookcert"
)

// New is the controller command named use.
func New(use string) *cobra.Command {
	var kubeconfig string
	var qps float32
	var burst int
	var maxImageSize string
	var importAllowed, importDenied []string
	o := controller.Options{Migration: migration.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run Ferry's controllers (a Deployment on a real cluster)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.FencingMaxUnreachable <= 0 || o.FencingMaxUnreachable > 1 {
				return fmt.Errorf("--fencing-max-unreachable must be a share between 0 and 1 (e.g. 0.49), not %v", o.FencingMaxUnreachable)
			}
			q, err := resource.ParseQuantity(maxImageSize)
			if err != nil || q.Value() <= 0 {
				return fmt.Errorf("--max-image-size must be a positive size such as 64Gi, not %q", maxImageSize)
			}
			o.MaxImageSize = q.Value()
			if o.ImportDestinations, err = netguard.New(importAllowed, importDenied); err != nil {
				return err
			}
			if err := storage.CheckSourceDirs(o.ImageSourceDirs); err != nil {
				return err
			}
			ctrl.SetLogger(zap.New(func(o *zap.Options) { o.TimeEncoder = logtime.Encoder }))
			cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
			if err != nil {
				return err
			}
			cfg.QPS, cfg.Burst = qps, burst
			return controller.Run(ctrl.SetupSignalHandler(), cfg, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (empty: in-cluster)")
	// 3,000 VMs starting at once need about 10 requests each: at 50/s the client's rate
	// limiter, not the apiserver, set the pace (10 minutes; see docs/benchmarks.md).
	f.Float32Var(&qps, "kube-api-qps", 200, "requests per second the controller sends the apiserver at most (client-side rate limit)")
	f.IntVar(&burst, "kube-api-burst", 400, "burst above --kube-api-qps")
	f.StringVar(&o.StorageDir, "storage-dir", "/var/lib/ferry/storage", "shared storage for images and disks")
	f.StringVar(&maxImageSize, "max-image-size", "64Gi", "largest image an import may download (a ClusterVirtualImage above it fails and says so)")
	f.StringSliceVar(&o.ImageSourceDirs, strings.TrimPrefix(storage.SourceDirsFlag, "--"), nil, "directories (absolute, comma-separated) that file:// image URLs may read from, symlinks resolved; none: file:// is refused. List only directories that no tenant can write to")
	f.StringSliceVar(&importDenied, "import-denied-networks", netguard.DefaultDenied, "networks (CIDR, address, or address:port) that HTTP and ContainerImage sources of images and disks may not connect to, checked at every connection (after DNS, on each redirect); add the cluster's pod, service and node networks. Default: loopback, link-local (a cloud's metadata service), unspecified, multicast, broadcast")
	f.BoolVar(&o.ImportDenyNodes, "import-deny-node-addresses", true, "deny imports the cluster's nodes' addresses too (their kubelets, agents and host services), as the nodes are at each connection; an address:port in --import-allowed-networks still opens one port")
	f.StringSliceVar(&importAllowed, "import-allowed-networks", nil, "exceptions to --import-denied-networks (CIDR, address, or address:port): the most specific rule decides, so 127.0.0.1:5000 allows one port of loopback and 10.0.0.0/8 with a denied 10.96.0.0/12 keeps the latter out")
	f.StringVar(&o.IPRange, "ip-range", ipam.DefaultRanges, "comma-separated IPv4 CIDRs that VM addresses come from, first range first (they must not overlap; each /29 or larger)")
	f.DurationVar(&o.IPLeaseRetention, "ip-lease-retention", 10*time.Minute, "how long a released VirtualMachineIPAddressLease stays for its namespace (which may take the address back meanwhile) before it is deleted")
	f.StringVar(&o.VMNetwork, "vm-network", controller.NetworkRouted, "routed: each VM gets a NIC and its address by DHCP, routed to the node it runs on (launchers need CAP_NET_ADMIN in the node's network namespace); none: VMs get no NIC")
	f.StringVar(&o.LauncherImage, "launcher-image", "ferry/launcher:latest", "container image of launcher pods")
	f.StringVar(&o.NodeStateDir, "node-state-dir", "/var/lib/ferry/node", "the node agents' --state-dir: launcher pods mount their run directory (pods/<uid>) and the node's migration certificate (migration-tls) from it")
	f.BoolVar(&o.MigrationTLS, "migration-tls", os.Getenv("FERRY_MIGRATION_TLS") != "false", "launcher pods migrate only over TLS, with the node's certificate (set it as the agents' --migration-tls; default true unless $FERRY_MIGRATION_TLS is false)")
	f.StringVar(&o.LauncherDevices, "launcher-devices", controller.DevicesPrivileged, "how launcher pods get the node's /dev/net/tun and /dev/kvm: privileged (privileged containers, for a kubelet without device plugins such as ferry up's) or plugin (from the node agents' device plugin, --device-plugin-dir, as the extended resources "+v1alpha2.ResourceTun+" and "+v1alpha2.ResourceKVM+": unprivileged containers with only NET_ADMIN, NET_RAW and NET_BIND_SERVICE, and those only for a VM with a NIC)")
	f.StringVar(&o.LauncherKVM, "launcher-kvm", vm.KVMAuto, "with --launcher-devices=plugin, when a launcher pod requests /dev/kvm: auto (while some schedulable node offers it: VMs then go to KVM nodes), require (always: VMs wait for a KVM node) or off (never: TCG everywhere); the launcher uses KVM when /dev/kvm opens in its container, else TCG")
	f.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "metrics endpoint (0 turns it off)")
	f.StringVar(&o.HealthAddr, "health-probe-bind-address", ":8081", "health endpoint (0 turns it off)")
	f.StringVar(&o.PprofAddr, "pprof-bind-address", os.Getenv("FERRY_CONTROLLER_PPROF"), "Go profiles at /debug/pprof (default $FERRY_CONTROLLER_PPROF; empty: off)")
	f.IntVar(&o.Webhook.Port, "webhook-port", 9443, "port of the admission webhooks (TLS; 0 turns them off)")
	f.StringVar(&o.Webhook.Host, "webhook-host", "", "address the admission webhooks listen on (empty: all)")
	f.StringVar(&o.Webhook.CertDir, "webhook-cert-dir", "/etc/ferry/webhook", "directory of the webhooks' serving certificate and key")
	f.StringVar(&o.Webhook.CertName, "webhook-cert-name", "tls.crt", "serving certificate file in --webhook-cert-dir")
	f.StringVar(&o.Webhook.KeyName, "webhook-key-name", "tls.key", "serving key file in --webhook-cert-dir")
	webhookCertFlags(f, &o.Webhook)
	f.StringVar(&o.Upload.Addr, "upload-bind-address", "", "a listener of the image upload endpoint's own, in plain HTTP (for a proxy that terminates TLS in front of it); empty: the endpoint is served on the webhook server (TLS), at "+storage.UploadPathPrefix)
	f.StringVar(&o.Upload.ExternalURL, "upload-external-url", "", "base URL (https://host:port) of status.imageUploadURLs.external, as users outside the cluster reach the upload endpoint; empty: the webhook server's address when --webhook-host names one, else none")
	f.StringVar(&o.Upload.InClusterURL, "upload-in-cluster-url", "", "base URL of status.imageUploadURLs.inCluster; empty: "+controller.DefaultUploadInClusterURL+" (deploy/base's webhook Service) when --webhook-host is empty, else none")
	m := &o.Migration
	f.Int64Var(&m.MaxBandwidthBytes, "migration-bandwidth", m.MaxBandwidthBytes, "live migration bandwidth cap, bytes/s")
	f.DurationVar(&m.DowntimeLimit, "migration-downtime-limit", m.DowntimeLimit, "longest guest pause QEMU may plan at switchover")
	f.DurationVar(&m.CompletionTimeoutPerGiB, "migration-completion-timeout-per-gib", m.CompletionTimeoutPerGiB, "transfer time allowed per GiB of guest memory")
	f.DurationVar(&m.ProgressTimeout, "migration-progress-timeout", m.ProgressTimeout, "fail a migration that stops making progress this long")
	f.DurationVar(&m.SchedulingTimeout, "migration-scheduling-timeout", m.SchedulingTimeout, "fail a migration whose target finds no node this long")
	f.IntVar(&m.MaxOutboundPerNode, "migrations-per-node-outbound", m.MaxOutboundPerNode, "concurrent migrations out of one node")
	f.IntVar(&m.MaxInboundPerNode, "migrations-per-node-inbound", m.MaxInboundPerNode, "concurrent migrations into one node")
	f.IntVar(&m.MaxParallel, "migrations-parallel", m.MaxParallel, "concurrent migrations in the cluster (0: max(2, nodes))")
	f.Float64Var(&o.FencingMaxUnreachable, "fencing-max-unreachable", fencing.DefaultMaxUnreachable, "share of nodes (0-1) beyond which no node is fenced: so many unreachable at once means a network or control-plane fault")
	f.BoolVar(&o.LeaderElection, "leader-elect", false, "elect one active replica")
	f.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election lease")
	return cmd
}

// webhookCertFlags are the controller's flags for where its webhooks' certificate comes from.
func webhookCertFlags(f *pflag.FlagSet, o *controller.WebhookOptions) {
	c := &o.Certs
	f.StringVar(&o.CertMode, "webhook-cert-mode", controller.CertModeFiles, "files: the serving certificate is provided in --webhook-cert-dir (e.g. by cert-manager) and reloaded when it changes; self: the controller issues it from a CA it keeps in the Secret --webhook-ca-secret, writes it into --webhook-cert-dir, sets the caBundle of --webhook-configurations, and rotates both")
	f.StringVar(&c.Namespace, "webhook-namespace", "ferry-system", "namespace of the webhooks' Service and of the CA Secret (self mode)")
	f.StringVar(&c.Service, "webhook-service", "ferry-controller-webhook", "Service the apiserver calls the webhooks through: the certificate is for <service>.<namespace>.svc[.cluster.local] (self mode; empty: only --webhook-cert-hosts)")
	f.StringVar(&c.CASecret, "webhook-ca-secret", webhookcert.DefaultCASecret, "Secret in --webhook-namespace that holds the webhooks' CA, created if missing (self mode)")
	f.StringSliceVar(&c.Hosts, "webhook-cert-hosts", nil, "more DNS names or IP addresses for the certificate, e.g. 127.0.0.1 where the apiserver calls the webhooks by URL (self mode)")
	f.StringSliceVar(&c.ValidatingWebhooks, "webhook-configurations", []string{"ferry-eviction", "ferry-virtualmachine"}, "ValidatingWebhookConfigurations whose caBundle the controller sets (self mode)")
	f.StringSliceVar(&c.MutatingWebhooks, "webhook-mutating-configurations", []string{"ferry-virtualmachine"}, "MutatingWebhookConfigurations whose caBundle the controller sets (self mode)")
	f.DurationVar(&c.CertValidity, "webhook-cert-validity", webhookcert.DefaultCertValidity, "life of a serving certificate, renewed after two thirds of it (self mode)")
	f.DurationVar(&c.CAValidity, "webhook-ca-validity", webhookcert.DefaultCAValidity, "life of the webhooks' CA: after two thirds of it a next CA joins the caBundles, after five sixths it signs, and the old one stays trusted until it ends (self mode)")
}
