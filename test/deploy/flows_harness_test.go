package deploy

// The harness of TestFlowsOnOwnTokensAndLeaderKill (and of the upgrade test): the
// processes it runs, their logs, and the cluster they make.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller"
)

// flows runs the processes of TestFlowsOnOwnTokensAndLeaderKill.
type flows struct {
	t          *testing.T
	bin        string
	dir, upDir string
	simDir     string
	admin      client.Client
	adminCS    *kubernetes.Clientset
	adminCfg   *rest.Config

	mu       sync.Mutex
	procs    map[string]*exec.Cmd
	done     map[string]chan struct{}
	logs     []string
	replicas [][]string
}

// start runs bin with args, its output in dir/logs/<name>-<n>.log; the test's end kills it.
func (f *flows) start(name string, args ...string) {
	f.t.Helper()
	logs := filepath.Join(f.dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.procs == nil {
		f.procs, f.done = map[string]*exec.Cmd{}, map[string]chan struct{}{}
	}
	logName := filepath.Join(logs, fmt.Sprintf("%s-%d.log", name, len(f.logs)))
	lf, err := os.Create(logName)
	if err != nil {
		f.t.Fatal(err)
	}
	cmd := exec.Command(f.bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		f.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); lf.Close(); close(done) }()
	f.procs[name], f.done[name] = cmd, done
	f.logs = append(f.logs, logName)
	f.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if f.t.Failed() {
			b, _ := os.ReadFile(logName)
			var errs []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, `"level":"error"`) || strings.Contains(l, "Warning") {
					errs = append(errs, l)
				}
			}
			f.t.Logf("--- %s: %d error lines (the last 20)\n%s\n--- its last 2000 bytes\n%s", filepath.Base(logName), len(errs),
				strings.Join(errs[max(0, len(errs)-20):], "\n"), tail(b, 2000))
		}
	})
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (f *flows) logNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.logs...)
}

// stopAll ends every process gracefully, so their logs are complete.
func (f *flows) stopAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, cmd := range f.procs {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-f.done[name]:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-f.done[name]
		}
	}
}

// connect waits for ferry up's apiserver and the CRDs and opens admin clients.
func (f *flows) connect() {
	f.t.Helper()
	f.connectWhen("virtualmachineoperations.virtualization.deckhouse.io")
}

// connectUp connects to a ferry up that installs none of Ferry's CRDs (--no-crds), once it
// says it is up.
func (f *flows) connectUp() {
	f.t.Helper()
	eventually(f.t, 90*time.Second, "ferry up saying it is up", func() (bool, string) {
		b, _ := os.ReadFile(filepath.Join(f.dir, "logs", "up-0.log"))
		return strings.Contains(string(b), "Ferry is up"), string(b)
	})
	f.connectWhen("")
}

// connectWhen connects to ferry up's control plane once it serves the CRD crdName ("":
// once it answers).
func (f *flows) connectWhen(crdName string) {
	f.t.Helper()
	kc := filepath.Join(f.upDir, "control-plane", "admin.kubeconfig")
	scheme := controller.NewScheme()
	_ = apiextensionsv1.AddToScheme(scheme)
	eventually(f.t, 90*time.Second, "ferry up's control plane and Ferry's CRDs", func() (bool, string) {
		cfg, err := clientcmd.BuildConfigFromFlags("", kc)
		if err != nil {
			return false, err.Error()
		}
		cfg.QPS, cfg.Burst = 100, 200
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		if err != nil {
			return false, err.Error()
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if crdName == "" {
			if err := c.List(context.Background(), &apiextensionsv1.CustomResourceDefinitionList{}); err != nil {
				return false, err.Error()
			}
		} else if err := c.Get(context.Background(), client.ObjectKey{Name: crdName}, &crd); err != nil {
			return false, err.Error()
		}
		f.adminCfg, f.admin = cfg, c
		return true, ""
	})
	cs, err := kubernetes.NewForConfig(f.adminCfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.adminCS = cs
}

// registerWebhooks creates deploy/base's webhook configurations with their Service
// replaced by a URL on port of 127.0.0.1, trusted with the cluster's CA.
func (f *flows) registerWebhooks(port int) {
	f.t.Helper()
	ca := f.adminCfg.CAData
	if len(ca) == 0 {
		var err error
		if ca, err = os.ReadFile(f.adminCfg.CAFile); err != nil {
			f.t.Fatal(err)
		}
	}
	for _, u := range manifests(f.t) {
		var cfg client.Object
		switch u.GetKind() {
		case "ValidatingWebhookConfiguration":
			cfg = &admissionregistrationv1.ValidatingWebhookConfiguration{}
		case "MutatingWebhookConfiguration":
			cfg = &admissionregistrationv1.MutatingWebhookConfiguration{}
		default:
			continue
		}
		fromManifest(f.t, u, cfg)
		for _, cc := range clientConfigsOf(cfg) {
			url := fmt.Sprintf("https://127.0.0.1:%d%s", port, *cc.Service.Path)
			cc.Service, cc.URL, cc.CABundle = nil, &url, ca
		}
		if err := f.admin.Create(context.Background(), cfg); err != nil {
			f.t.Fatalf("deploy/base's webhook configuration %s: %v", cfg.GetName(), err)
		}
	}
}

// clientConfigsOf are the client configurations of a validating or mutating webhook
// configuration's webhooks, to edit in place.
func clientConfigsOf(cfg client.Object) []*admissionregistrationv1.WebhookClientConfig {
	var out []*admissionregistrationv1.WebhookClientConfig
	switch c := cfg.(type) {
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		for i := range c.Webhooks {
			out = append(out, &c.Webhooks[i].ClientConfig)
		}
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		for i := range c.Webhooks {
			out = append(out, &c.Webhooks[i].ClientConfig)
		}
	}
	return out
}

// token issues a token of serviceAccount, bound to pod when it is not nil.
func (f *flows) token(serviceAccount string, pod *corev1.Pod) string {
	f.t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	got, err := f.adminCS.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatalf("token for %s: %v", serviceAccount, err)
	}
	return got.Status.Token
}

func (f *flows) waitNodesReady(names []string) {
	f.t.Helper()
	eventually(f.t, 90*time.Second, fmt.Sprintf("%d simulated nodes Ready", len(names)), func() (bool, string) {
		ready := 0
		for _, n := range names {
			var node corev1.Node
			if err := f.admin.Get(context.Background(), client.ObjectKey{Name: n}, &node); err != nil {
				continue
			}
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready == len(names), fmt.Sprintf("%d Ready", ready)
	})
}

// leader is the replica whose metrics say it leads; it waits until one does.
func (f *flows) leader() int {
	f.t.Helper()
	who := -1
	eventually(f.t, 60*time.Second, "a controller replica leads", func() (bool, string) {
		var seen []string
		for i := range f.replicas {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", flowsPort+2010+2*i))
			if err != nil {
				seen = append(seen, fmt.Sprintf("controller-%d: %v", i, err))
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `leader_election_master_status{name="ferry-controller"} 1`) {
				who = i
				return true, ""
			}
			seen = append(seen, fmt.Sprintf("controller-%d: standby", i))
		}
		return false, strings.Join(seen, "; ")
	})
	return who
}

// killLeader kills the leading replica with SIGKILL, waits until the other replica leads,
// and starts the killed one again, as a Deployment would; it returns the new leader.
func (f *flows) killLeader() int {
	f.t.Helper()
	i := f.leader()
	name := fmt.Sprintf("controller-%d", i)
	f.mu.Lock()
	cmd, done := f.procs[name], f.done[name]
	f.mu.Unlock()
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		f.t.Fatal(err)
	}
	<-done
	killed := time.Now()
	next := f.leader()
	if next == i {
		f.t.Fatalf("controller-%d leads although it was killed", i)
	}
	f.t.Logf("killed controller-%d (the leader) with SIGKILL; controller-%d leads %.1fs later", i, next, time.Since(killed).Seconds())
	f.start(name, f.replicas[i]...)
	return next
}

// control calls the simulated nodes' control endpoint.
func (f *flows) control(method, path string) []byte {
	f.t.Helper()
	addr, err := os.ReadFile(filepath.Join(f.simDir, "control-addr"))
	if err != nil {
		f.t.Fatal(err)
	}
	req, _ := http.NewRequest(method, "http://"+string(addr)+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		f.t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
	}
	return b
}

func (f *flows) vm(ns, name string) *v1alpha2.VirtualMachine {
	f.t.Helper()
	vm := &v1alpha2.VirtualMachine{}
	if err := f.admin.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, vm); err != nil {
		f.t.Fatal(err)
	}
	return vm
}

// waitRunning waits until the VM is Running with an address on a node other than notOn.
func (f *flows) waitRunning(ns, name, notOn string) *v1alpha2.VirtualMachine {
	f.t.Helper()
	var vm *v1alpha2.VirtualMachine
	eventually(f.t, 3*time.Minute, "VM "+name+" Running", func() (bool, string) {
		vm = f.vm(ns, name)
		return vm.Status.Phase == v1alpha2.MachineRunning && vm.Status.NodeName != "" && vm.Status.NodeName != notOn && vm.Status.IPAddress != "",
			fmt.Sprintf("%s on %q, address %q, conditions %s", vm.Status.Phase, vm.Status.NodeName, vm.Status.IPAddress, conditions(vm.Status.Conditions))
	})
	return vm
}

// waitMoved waits until the VM runs on another node than before, with the same address.
func (f *flows) waitMoved(ns, name string, before *v1alpha2.VirtualMachine) *v1alpha2.VirtualMachine {
	f.t.Helper()
	vm := f.waitRunning(ns, name, before.Status.NodeName)
	if vm.Status.IPAddress != before.Status.IPAddress {
		f.t.Errorf("%s: address %s, was %s", name, vm.Status.IPAddress, before.Status.IPAddress)
	}
	return vm
}

func (f *flows) evict(ns, vm string) *v1alpha2.VirtualMachineOperation {
	f.t.Helper()
	op := &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "evict-" + vm + "-"},
		Spec:       v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: vm},
	}
	if err := f.admin.Create(context.Background(), op); err != nil {
		f.t.Fatal(err)
	}
	return op
}

func (f *flows) waitOp(op *v1alpha2.VirtualMachineOperation, want v1alpha2.OperationPhase) {
	f.t.Helper()
	eventually(f.t, 3*time.Minute, "operation "+op.Name+" "+string(want), func() (bool, string) {
		if err := f.admin.Get(context.Background(), client.ObjectKeyFromObject(op), op); err != nil {
			return false, err.Error()
		}
		if op.Finished() && op.Status.Phase != want {
			f.t.Fatalf("operation %s ended %s: %s", op.Name, op.Status.Phase, op.Status.Progress)
		}
		return op.Status.Phase == want, fmt.Sprintf("%s: %s", op.Status.Phase, op.Status.Progress)
	})
}

func conditions(cs []metav1.Condition) string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
	}
	return strings.Join(out, "; ")
}
