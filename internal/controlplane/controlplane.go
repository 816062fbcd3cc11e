package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// Defaults applied by Start to zero-valued Options fields.
const (
	DefaultBindAddress = "127.0.0.1"
	DefaultSecurePort  = 6443
	DefaultServiceCIDR = "10.96.0.0/16"
	// DefaultStopTimeout is used when the Start context is cancelled.
	DefaultStopTimeout = 5 * time.Second
	// ReadyTimeout bounds how long Start waits for the apiserver's /readyz.
	ReadyTimeout = 90 * time.Second
)

// Options configures the control plane.
type Options struct {
	// DataDir holds certificates, kubeconfigs, etcd data and logs. Required.
	DataDir string
	// BindAddress is the IP the apiserver listens on and advertises
	// (default 127.0.0.1).
	BindAddress string
	// SecurePort is the apiserver's HTTPS port (default 6443).
	SecurePort int
	// ServiceCIDR is the service cluster IP range (default 10.96.0.0/16).
	ServiceCIDR string
	// NodeMonitorGracePeriod is how long kube-controller-manager waits
	// without node heartbeats before marking a node NotReady (0 = upstream
	// default).
	NodeMonitorGracePeriod time.Duration
	// ExtraSANs are extra DNS names / IPs for the apiserver serving cert.
	ExtraSANs []string
	// Log receives all component logs. When nil they go to DataDir/logs/.
	Log io.Writer
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	// Kubeconfig is the path of DataDir/admin.kubeconfig (system:masters).
	Kubeconfig string
	// RESTConfig is an admin client configuration.
	RESTConfig *rest.Config
	// CAFile is the path of the cluster CA certificate (PEM).
	CAFile string
	// CAData is the cluster CA certificate (PEM).
	CAData []byte
	// Server is the apiserver URL, https://BindAddress:SecurePort.
	Server string
	// EtcdURL is the embedded etcd client URL (plain HTTP, loopback).
	EtcdURL string

	ca      *authority
	etcd    *embed.Etcd
	logs    *logSinks
	klogOut io.Writer

	cancelComponents context.CancelFunc
	kcmDone          <-chan error
	schedDone        <-chan error
	cancelAPIServer  context.CancelFunc
	apiDone          <-chan error

	errCh    chan error
	stopOnce sync.Once
	stopped  chan struct{}
	stopErr  error
	stopping chan struct{}
}

// running guards against two control planes in one process: the upstream
// components share global state.
var (
	runningMu sync.Mutex
	running   bool
)

func (o *Options) setDefaults() error {
	if o.DataDir == "" {
		return errors.New("controlplane: DataDir is required")
	}
	if o.BindAddress == "" {
		o.BindAddress = DefaultBindAddress
	}
	if net.ParseIP(o.BindAddress) == nil {
		return fmt.Errorf("controlplane: BindAddress %q is not an IP address", o.BindAddress)
	}
	if o.SecurePort == 0 {
		o.SecurePort = DefaultSecurePort
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = DefaultServiceCIDR
	}
	return nil
}

// firstServiceIP returns the first usable address of cidr (the
// kubernetes.default service IP).
func firstServiceIP(cidr string) (string, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return "", fmt.Errorf("invalid ServiceCIDR %q: %w", cidr, err)
	}
	return p.Masked().Addr().Next().String(), nil
}

// Start brings up etcd, kube-apiserver (waiting for /readyz),
// kube-controller-manager and kube-scheduler in this process. Cancelling ctx
// aborts startup; cancelling it after Start returned triggers an ordered
// Stop(DefaultStopTimeout). Only one control plane may run per process at a
// time.
func Start(ctx context.Context, o Options) (_ *ControlPlane, err error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	runningMu.Lock()
	if running {
		runningMu.Unlock()
		return nil, errors.New("controlplane: a control plane is already running in this process")
	}
	running = true
	runningMu.Unlock()

	c := &ControlPlane{
		errCh:    make(chan error, 1),
		stopped:  make(chan struct{}),
		stopping: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			_ = c.shutdown(10 * time.Second)
		}
	}()
	if err := c.start(ctx, o); err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = c.Stop(DefaultStopTimeout)
		case <-c.stopping:
		}
	}()
	return c, nil
}

func (c *ControlPlane) start(ctx context.Context, o Options) error {
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return err
	}
	pki := filepath.Join(o.DataDir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}

	// Logging first, so nothing leaks to stdout/stderr.
	logs, err := newLogSinks(o.DataDir, o.Log)
	if err != nil {
		return err
	}
	c.logs = logs
	klogW, err := logs.writer("kube")
	if err != nil {
		return err
	}
	c.klogOut = klogW
	redirectKlog(klogW)

	// Certificates and keys, generated once and reused.
	ca, err := loadOrCreateCA(pki, "ferry-ca")
	if err != nil {
		return fmt.Errorf("cluster CA: %w", err)
	}
	c.ca, c.CAData, c.CAFile = ca, ca.CertPEM, filepath.Join(pki, "ca.crt")
	serviceIP, err := firstServiceIP(o.ServiceCIDR)
	if err != nil {
		return err
	}
	hosts := []string{o.BindAddress, "127.0.0.1", "::1", "localhost", serviceIP,
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if hn, err := os.Hostname(); err == nil && hn != "" {
		hosts = append(hosts, hn)
	}
	hosts = append(hosts, o.ExtraSANs...)
	files := apiserverFiles{caFile: c.CAFile}
	if files.admissionConfig, err = writeAdmissionConfig(o.DataDir); err != nil {
		return err
	}
	files.servingCert, files.servingKey, err = ca.ensurePair(pki, "apiserver",
		leafSpec{commonName: "kube-apiserver", hosts: hosts, server: true})
	if err != nil {
		return err
	}
	files.kubeletClientCert, files.kubeletClientKey, err = ca.ensurePair(pki, "apiserver-kubelet-client",
		leafSpec{commonName: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true})
	if err != nil {
		return err
	}
	files.saKey, files.saPub, err = ensureSAKey(pki)
	if err != nil {
		return fmt.Errorf("service-account key: %w", err)
	}

	c.Server = "https://" + net.JoinHostPort(o.BindAddress, strconv.Itoa(o.SecurePort))
	c.Kubeconfig = filepath.Join(o.DataDir, "admin.kubeconfig")
	kcmKubeconfig := filepath.Join(o.DataDir, "controller-manager.kubeconfig")
	schedKubeconfig := filepath.Join(o.DataDir, "scheduler.kubeconfig")
	for _, kc := range []struct{ name, path, cn, org string }{
		{"admin", c.Kubeconfig, AdminUser, "system:masters"},
		{"controller-manager", kcmKubeconfig, "system:kube-controller-manager", ""},
		{"scheduler", schedKubeconfig, "system:kube-scheduler", ""},
	} {
		var orgs []string
		if kc.org != "" {
			orgs = []string{kc.org}
		}
		if err := ca.ensureKubeconfig(pki, kc.name, kc.path, c.Server, kc.cn, orgs); err != nil {
			return fmt.Errorf("%s kubeconfig: %w", kc.name, err)
		}
	}
	if c.RESTConfig, err = restConfigFromFile(c.Kubeconfig); err != nil {
		return err
	}

	// etcd.
	etcdLog, err := logs.writer("etcd")
	if err != nil {
		return err
	}
	if c.etcd, c.EtcdURL, err = startEtcd(o.DataDir, etcdLog); err != nil {
		return err
	}

	// kube-apiserver. Component contexts are detached from ctx: their
	// lifetime is controlled by Stop.
	base := context.WithoutCancel(ctx)
	apiLog, apiW, err := logs.logger("kube-apiserver")
	if err != nil {
		return err
	}
	apiCtx, cancelAPI := context.WithCancel(klog.NewContext(base, apiLog))
	c.cancelAPIServer = cancelAPI
	c.apiDone, err = runAPIServer(apiCtx, apiserverArgs(o, c.EtcdURL, files), apiW)
	if err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	// Ready even when ctx ends meanwhile: an apiserver stopped before its post-start hooks
	// finished exits the whole process (k8s.io/apiserver's runPostStartHook calls
	// klog.Fatalf), and ferry up's deferred clean-up (the nodes' network namespaces) with it.
	// Readiness includes the hooks; ReadyTimeout bounds the wait.
	if err := waitReady(base, c.RESTConfig, c.apiDone, ReadyTimeout); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	// kube-controller-manager and kube-scheduler.
	compCtx, cancelComp := context.WithCancel(base)
	c.cancelComponents = cancelComp
	kcmLog, kcmW, err := logs.logger("kube-controller-manager")
	if err != nil {
		return err
	}
	c.kcmDone, err = runControllerManager(klog.NewContext(compCtx, kcmLog), controllerManagerArgs(o, controllerManagerFiles{
		kubeconfig: kcmKubeconfig, caFile: c.CAFile, caKey: filepath.Join(pki, "ca.key"), saKey: files.saKey,
	}), kcmW)
	if err != nil {
		return fmt.Errorf("kube-controller-manager: %w", err)
	}
	schedLog, schedW, err := logs.logger("kube-scheduler")
	if err != nil {
		return err
	}
	c.schedDone, err = runScheduler(klog.NewContext(compCtx, schedLog), schedulerArgs(schedKubeconfig), schedW)
	if err != nil {
		return fmt.Errorf("kube-scheduler: %w", err)
	}

	c.watch("kube-apiserver", c.apiDone)
	c.watch("kube-controller-manager", c.kcmDone)
	c.watch("kube-scheduler", c.schedDone)
	c.watch("etcd", c.etcd.Err())
	return nil
}

// watch reports an unexpected exit of a component on Err().
func (c *ControlPlane) watch(name string, ch <-chan error) {
	go func() {
		select {
		case err, ok := <-ch:
			if !ok || err == nil {
				err = errors.New("exited")
			}
			select {
			case <-c.stopping:
			default:
				select {
				case c.errCh <- fmt.Errorf("%s: %w", name, err):
				default:
				}
			}
		case <-c.stopping:
		}
	}()
}

// Err delivers the first unexpected failure of a component (the channel is
// never closed).
func (c *ControlPlane) Err() <-chan error { return c.errCh }

// WriteKubeconfig writes a kubeconfig at path for the user commonName (in the groups
// orgs), with a client certificate kept in the PKI directory as name.crt/name.key and
// reissued only when it no longer fits; e.g. a real kubelet's, "system:node:n1" in
// "system:nodes".
func (c *ControlPlane) WriteKubeconfig(path, name, commonName string, orgs []string) error {
	return c.ca.ensureKubeconfig(filepath.Dir(c.CAFile), name, path, c.Server, commonName, orgs)
}

// IssueClientCert issues a client certificate signed by the cluster CA, e.g.
// commonName "system:node:n1" with orgs ["system:nodes"].
func (c *ControlPlane) IssueClientCert(commonName string, orgs []string) (certPEM, keyPEM []byte, err error) {
	return c.ca.issue(leafSpec{commonName: commonName, orgs: orgs, client: true})
}
