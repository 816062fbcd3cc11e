package cli

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryvm/ferry/internal/controller"
)

// Globals are the flags every verb shares.
type Globals struct {
	// Kubeconfig is the kubeconfig to use: $KUBECONFIG (a list of files, as kubectl reads
	// it) or the local cluster's.
	Kubeconfig func() string
	// Namespace is -n; "" takes the kubeconfig's current context's namespace, as kubectl
	// and d8 do.
	Namespace string
	Out       io.Writer
	// resolver, when set, finds VMs instead of the cluster (tests of port-forward and ssh).
	resolver Resolver
}

// clientConfig reads the kubeconfig the way kubectl does: a $KUBECONFIG list is merged,
// the first file that sets a value wins.
func (g *Globals) clientConfig() clientcmd.ClientConfig {
	rules := &clientcmd.ClientConfigLoadingRules{}
	if g.Kubeconfig != nil {
		if paths := filepath.SplitList(g.Kubeconfig()); len(paths) > 1 {
			rules.Precedence = paths
		} else {
			rules.ExplicitPath = g.Kubeconfig()
		}
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
}

func (g *Globals) restConfig() (*rest.Config, error) {
	cfg, err := g.clientConfig().ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig %s: %w (is `ferry up` running?)", g.Kubeconfig(), err)
	}
	return cfg, nil
}

func (g *Globals) client() (client.Client, error) {
	cfg, err := g.restConfig()
	if err != nil {
		return nil, err
	}
	return newClient(cfg)
}

func newClient(cfg *rest.Config) (client.Client, error) {
	return client.New(cfg, client.Options{Scheme: controller.NewScheme()})
}

// namespace is -n, else the namespace of the kubeconfig's current context, else "default".
// A kubeconfig that cannot be read gives "default" here: the client made from it will say
// what is wrong with it.
func (g *Globals) namespace() string {
	if g.Namespace != "" {
		return g.Namespace
	}
	if ns, _, err := g.clientConfig().Namespace(); err == nil && ns != "" {
		return ns
	}
	return "default"
}

// vmRef names a VM: NAME, or NAME.NAMESPACE as d8 (and virtctl) write it.
type vmRef struct {
	Namespace, Name string
}

func (r vmRef) String() string { return r.Namespace + "/" + r.Name }

// parseVMRef reads "NAME" or "NAME.NAMESPACE". The first dot ends the name, as in d8: a VM
// whose name has a dot in it is reached with -n and the NAME.NAMESPACE form.
func parseVMRef(s string) (vmRef, error) {
	name, ns, dotted := strings.Cut(s, ".")
	if name == "" {
		if dotted {
			return vmRef{}, fmt.Errorf("%q: no VM name before the dot (write VM or VM.NAMESPACE)", s)
		}
		return vmRef{}, errors.New("no VM name")
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return vmRef{}, fmt.Errorf("%q is not a VM name: %s", name, strings.Join(errs, "; "))
	}
	if dotted {
		if ns == "" {
			return vmRef{}, fmt.Errorf("%q: no namespace after the dot (write VM or VM.NAMESPACE)", s)
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return vmRef{}, fmt.Errorf("%q: %q is not a namespace: %s", s, ns, strings.Join(errs, "; "))
		}
	}
	return vmRef{Namespace: ns, Name: name}, nil
}

// target reads a VM argument, VM or VM.NAMESPACE, and fills in the namespace: the one the
// argument names, else -n, else the kubeconfig context's. An argument and an -n that
// disagree are refused rather than one of them silently ignored.
func (g *Globals) target(arg string) (vmRef, error) {
	ref, err := parseVMRef(arg)
	if err != nil {
		return vmRef{}, err
	}
	if ref.Namespace == "" {
		ref.Namespace = g.namespace()
		return ref, nil
	}
	if g.Namespace != "" && g.Namespace != ref.Namespace {
		return vmRef{}, fmt.Errorf("%q names namespace %s but -n says %s: give one of them", arg, ref.Namespace, g.Namespace)
	}
	return ref, nil
}
