package controlplane

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// apiserverFiles are the on-disk inputs of kube-apiserver.
type apiserverFiles struct {
	caFile, servingCert, servingKey string
	saKey, saPub                    string
	kubeletClientCert               string
	kubeletClientKey                string
	admissionConfig                 string
}

// PodSecurityExempt are the users whose pods Pod Security admission does not check: Ferry's
// controller, which creates the VMs' launcher pods in the tenants' namespaces (they need
// the node's network and host paths, which the baseline level forbids), as the
// ServiceAccount of deploy/base and as `ferry up`'s administrator, whose credentials the
// stand-in's controller uses. A tenant's namespace can so run at baseline or restricted,
// and its users' own pods are held to that level. On another cluster, an administrator
// adds the ServiceAccount to the same list of its kube-apiserver (README, docs/security.md).
var PodSecurityExempt = []string{"system:serviceaccount:ferry-system:ferry-controller", AdminUser}

// AdminUser is the user of the admin kubeconfig (group system:masters).
const AdminUser = "ferry-admin"

// writeAdmissionConfig writes kube-apiserver's admission configuration: Pod Security's
// defaults (privileged, as without a configuration, for namespaces without a level) and
// its exemptions.
func writeAdmissionConfig(dataDir string) (string, error) {
	users, _ := json.Marshal(PodSecurityExempt)
	cfg := `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: PodSecurity
    configuration:
      apiVersion: pod-security.admission.config.k8s.io/v1
      kind: PodSecurityConfiguration
      defaults: {enforce: privileged, enforce-version: latest, audit: privileged, audit-version: latest, warn: privileged, warn-version: latest}
      exemptions: {usernames: ` + string(users) + `, namespaces: [], runtimeClasses: []}
`
	path := filepath.Join(dataDir, "admission.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

func apiserverArgs(o Options, etcdURL string, f apiserverFiles) []string {
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + o.BindAddress,
		"--advertise-address=" + o.BindAddress,
		"--secure-port=" + strconv.Itoa(o.SecurePort),
		"--tls-cert-file=" + f.servingCert,
		"--tls-private-key-file=" + f.servingKey,
		"--client-ca-file=" + f.caFile,
		"--kubelet-certificate-authority=" + f.caFile,
		"--kubelet-client-certificate=" + f.kubeletClientCert,
		"--kubelet-client-key=" + f.kubeletClientKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f.saPub,
		"--service-account-signing-key-file=" + f.saKey,
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + o.ServiceCIDR,
		"--authorization-mode=Node,RBAC",
		// Real kubelets join with node credentials: each may change only its own Node and
		// the pods bound to it.
		"--enable-admission-plugins=NodeRestriction",
		"--admission-control-config-file=" + f.admissionConfig,
		// The apiserver reaches a kubelet (logs, exec) at the address the node reports.
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		// Webhooks behind a Service are called at an endpoint's address: no kube-proxy
		// runs where the apiserver does.
		"--enable-aggregator-routing=true",
		"--allow-privileged=true",
		"--endpoint-reconciler-type=" + endpointReconciler(o.BindAddress),
		"--enable-bootstrap-token-auth=true",
		"--profiling=false",
		// Close long-running connections quickly on shutdown instead of
		// waiting up to 60s for watchers to go away.
		"--shutdown-send-retry-after=true",
		"--shutdown-delay-duration=0s",
	}
}

// endpointReconciler is how the apiserver publishes itself as the endpoint of the
// kubernetes Service: "lease" where pods can reach it (an address on a node network),
// "none" on loopback, which no endpoint may name.
func endpointReconciler(bind string) string {
	if ip := net.ParseIP(bind); ip != nil && !ip.IsLoopback() {
		return "lease"
	}
	return "none"
}

// runAPIServer parses args like the kube-apiserver binary would and starts
// the server in a goroutine. The server stops when ctx is cancelled; done is
// closed once Run has returned (its error, if any, is sent first).
func runAPIServer(ctx context.Context, args []string, flagOut io.Writer) (done <-chan error, err error) {
	s := apiserveroptions.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	fs.SetOutput(flagOut)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	name, err := informerName("kube-apiserver")
	if err != nil {
		return nil, err
	}
	s.InformerName = name
	completed, err := s.Complete(ctx)
	if err != nil {
		name.Release()
		return nil, err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		name.Release()
		return nil, utilerrors.NewAggregate(errs)
	}
	ch := make(chan error, 1)
	go func() {
		defer close(ch)
		defer name.Release()
		if err := apiserverapp.Run(ctx, completed); err != nil && ctx.Err() == nil {
			ch <- err
		}
	}()
	return ch, nil
}

// waitReady polls /readyz until it answers 200 "ok", the apiserver exits,
// or the deadline passes.
func waitReady(ctx context.Context, cfg *rest.Config, apiDone <-chan error, deadline time.Duration) error {
	tlsCfg, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return err
	}
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsCfg},
		Timeout:   2 * time.Second,
	}
	defer client.CloseIdleConnections()
	url := cfg.Host + "/readyz"
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("status %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case err, ok := <-apiDone:
			if ok && err != nil {
				return fmt.Errorf("kube-apiserver exited: %w", err)
			}
			return fmt.Errorf("kube-apiserver exited before becoming ready")
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready after %s (last: %s)", deadline, last)
		case <-tick.C:
		}
	}
}
