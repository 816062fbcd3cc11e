package controlplane

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/configz"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// Names under which the upstream components register their /configz entry.
// configz refuses duplicate registrations, so they are released before a
// component is started again in the same process.
const (
	kcmConfigzName   = kcmapp.ConfigzName
	schedConfigzName = "componentconfig"
)

var informerNameSeq atomic.Int64

// informerName reserves the client-go informer name base (used as a metrics
// label), or a unique variant of it if an earlier, abandoned instance in this
// process still holds it. Release it once the component has stopped.
func informerName(base string) (*cache.InformerName, error) {
	if n, err := cache.NewInformerName(base); err == nil {
		return n, nil
	}
	return cache.NewInformerName(fmt.Sprintf("%s-%d", base, informerNameSeq.Add(1)))
}

// controllerManagerFiles are the on-disk inputs of kube-controller-manager.
type controllerManagerFiles struct {
	kubeconfig    string
	caFile, caKey string
	saKey         string
}

func controllerManagerArgs(o Options, f controllerManagerFiles) []string {
	args := []string{
		"--kubeconfig=" + f.kubeconfig,
		"--authentication-kubeconfig=" + f.kubeconfig,
		"--authorization-kubeconfig=" + f.kubeconfig,
		// No serving endpoint: nothing scrapes it and it would need a port.
		"--secure-port=0",
		// Leader election would os.Exit the process when the lease is lost.
		"--leader-elect=false",
		// All of them but the ValidatingAdmissionPolicy status controller: it only writes
		// type-checking warnings into a policy's status, and its schema resolver alone
		// held 7.5 MB of ferry up's heap (a third of the controller-manager's).
		"--controllers=*,-validatingadmissionpolicy-status-controller",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + f.saKey,
		"--root-ca-file=" + f.caFile,
		"--cluster-signing-cert-file=" + f.caFile,
		"--cluster-signing-key-file=" + f.caKey,
		"--service-cluster-ip-range=" + o.ServiceCIDR,
		"--cluster-name=ferry",
		"--controller-shutdown-timeout=2s",
		"--profiling=false",
	}
	if o.NodeMonitorGracePeriod > 0 {
		args = append(args, "--node-monitor-grace-period="+o.NodeMonitorGracePeriod.String())
	}
	return args
}

// runControllerManager starts kube-controller-manager in a goroutine. It
// stops when ctx is cancelled; done is closed when Run has returned.
func runControllerManager(ctx context.Context, args []string, flagOut io.Writer) (<-chan error, error) {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, err
	}
	known, disabled, aliases := kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()
	nfs := s.Flags(known, disabled, aliases)
	s.ParsedFlags = &nfs
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	fs.SetOutput(flagOut)
	for _, f := range nfs.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	c, err := s.Config(ctx, known, disabled, aliases)
	if err != nil {
		return nil, err
	}
	configz.Delete(kcmConfigzName)
	ch := make(chan error, 1)
	go func() {
		defer close(ch)
		if err := kcmapp.Run(ctx, c.Complete()); err != nil && ctx.Err() == nil {
			ch <- err
		}
	}()
	return ch, nil
}

func schedulerArgs(kubeconfig string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--secure-port=0",
		// With leader election the scheduler calls os.Exit on shutdown.
		"--leader-elect=false",
		"--profiling=false",
	}
}

// runScheduler starts kube-scheduler in a goroutine. It stops when ctx is
// cancelled; done is closed when Run has returned.
func runScheduler(ctx context.Context, args []string, flagOut io.Writer) (<-chan error, error) {
	opts := schedoptions.NewOptions()
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	fs.SetOutput(flagOut)
	for _, f := range opts.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return nil, err
	}
	name, err := informerName("kube-scheduler")
	if err != nil {
		return nil, err
	}
	opts.InformerName = name
	cc, sched, err := schedapp.Setup(ctx, opts)
	if err != nil {
		name.Release()
		return nil, err
	}
	configz.Delete(schedConfigzName)
	ch := make(chan error, 1)
	go func() {
		defer close(ch)
		defer name.Release()
		// Without leader election Run always returns an error once ctx is
		// done ("finished without leader elect"); only report early exits.
		if err := schedapp.Run(ctx, cc, sched); err != nil && ctx.Err() == nil {
			ch <- err
		}
	}()
	return ch, nil
}
