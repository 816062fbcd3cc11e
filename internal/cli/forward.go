package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Endpoint is what a transport needs to reach a VM: its address, and the launcher pod that
// runs it (for a path through the Kubernetes API).
type Endpoint struct {
	Namespace, Name string
	Address         string
	Pod             string
}

func (e Endpoint) String() string { return "VM " + e.Namespace + "/" + e.Name }

// Resolver finds a VM's endpoint; the cluster's is vmEndpoint, tests inject their own.
type Resolver func(ctx context.Context, namespace, name string) (Endpoint, error)

// Stream is a byte stream to a VM's port. CloseWrite ends the sending direction only, so
// a client that half-closes (e.g. `nc -N`, an HTTP/1.0 request) still reads the answer.
type Stream interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// Transport opens streams to a VM's port. Direct dials the VM's address from here; a path
// through the Kubernetes API (pods/exec of a connector in the launcher pod) serves hosts
// that have no route to the VM range.
type Transport interface {
	Dial(ctx context.Context, vm Endpoint, port int) (Stream, error)
}

// directTransport dials the VM's address: under `ferry up` the host has the VM range
// on-link (docs/networking.md), on a real cluster any host the range is routed to.
type directTransport struct {
	timeout time.Duration
}

func (d directTransport) Dial(ctx context.Context, vm Endpoint, port int) (Stream, error) {
	if vm.Address == "" {
		return nil, fmt.Errorf("%s has no IP address (status.ipAddress is empty)", vm)
	}
	nd := net.Dialer{Timeout: d.timeout}
	c, err := nd.DialContext(ctx, "tcp", net.JoinHostPort(vm.Address, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("connecting to %s at %s: %w", vm, net.JoinHostPort(vm.Address, strconv.Itoa(port)), err)
	}
	return c.(*net.TCPConn), nil
}

// autoTransport takes the direct path when the VM's address answers quickly and the API
// path otherwise. A refused connection counts as an answer: the guest was reached and
// said no, which the API path would only repeat more slowly.
type autoTransport struct {
	direct directTransport
	api    Transport

	mu     sync.Mutex
	chosen Transport
}

func (a *autoTransport) Dial(ctx context.Context, vm Endpoint, port int) (Stream, error) {
	a.mu.Lock()
	chosen := a.chosen
	a.mu.Unlock()
	if chosen != nil {
		return chosen.Dial(ctx, vm, port)
	}
	s, derr := a.direct.Dial(ctx, vm, port)
	if derr == nil || errors.Is(derr, syscall.ECONNREFUSED) {
		a.choose(a.direct)
		return s, derr
	}
	s, err := a.api.Dial(ctx, vm, port)
	if err != nil {
		return nil, fmt.Errorf("%w; through the Kubernetes API: %w", derr, err)
	}
	a.choose(a.api)
	return s, nil
}

func (a *autoTransport) choose(t Transport) {
	a.mu.Lock()
	a.chosen = t
	a.mu.Unlock()
}

// splice copies both ways until both directions end. An end of input is passed on as a
// half-close; an error in one direction aborts the other.
func splice(a, b Stream) error {
	errc := make(chan error, 2)
	pipe := func(dst, src Stream) {
		_, err := io.Copy(dst, src)
		if err == nil {
			err = dst.CloseWrite()
		}
		errc <- err
	}
	go pipe(b, a)
	go pipe(a, b)
	first := <-errc
	if first != nil {
		a.Close()
		b.Close()
	}
	second := <-errc
	a.Close()
	b.Close()
	if first != nil {
		return first
	}
	if second != nil && !errors.Is(second, net.ErrClosed) {
		return second
	}
	return nil
}

// bridgeStdio joins in/out to remote, for a ProxyCommand: it returns when the remote side
// ends, since a client such as ssh may keep its end of stdin open until the proxy exits.
func bridgeStdio(remote Stream, in io.Reader, out io.Writer) error {
	go func() {
		if _, err := io.Copy(remote, in); err == nil {
			remote.CloseWrite()
		} else {
			remote.Close()
		}
	}()
	_, err := io.Copy(out, remote)
	remote.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// PortPair is one LOCAL:REMOTE of port-forward; Local 0 takes a free port.
type PortPair struct {
	Local, Remote int
}

// parsePortPair reads "LOCAL:REMOTE", "PORT" (the same on both sides) or ":REMOTE" (any
// free local port), as kubectl port-forward does.
func parsePortPair(s string) (PortPair, error) {
	local, remote, found := strings.Cut(s, ":")
	if !found {
		remote = local
	}
	r, err := parsePort(remote, false)
	if err != nil {
		return PortPair{}, fmt.Errorf("port pair %q: remote port: %w (write LOCAL:REMOTE, e.g. 8080:80)", s, err)
	}
	l := 0
	if local != "" || !found {
		if l, err = parsePort(local, false); err != nil {
			return PortPair{}, fmt.Errorf("port pair %q: local port: %w (write LOCAL:REMOTE, e.g. 8080:80, or :80 for any free local port)", s, err)
		}
	}
	return PortPair{Local: l, Remote: r}, nil
}

func parsePort(s string, zeroOK bool) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 0 || p > 65535 || (p == 0 && !zeroOK) || strings.TrimSpace(s) != s || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return p, nil
}

// parseUserVM splits "[user@]VM" and checks that VM can name a VM (NAME or
// NAME.NAMESPACE); vm is returned as written.
func parseUserVM(s string) (user, vm string, err error) {
	vm = s
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		user, vm = s[:i], s[i+1:]
		if user == "" {
			return "", "", fmt.Errorf("%q: empty user name before @ (write user@VM or just VM)", s)
		}
	}
	if _, err := parseVMRef(vm); err != nil {
		return "", "", fmt.Errorf("%q: %w", s, err)
	}
	return user, vm, nil
}

// vmEndpoint reads a VM from the cluster and says why it cannot be reached if it cannot.
func vmEndpoint(c client.Client) Resolver {
	return func(ctx context.Context, namespace, name string) (Endpoint, error) {
		var vm v1alpha2.VirtualMachine
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &vm); err != nil {
			return Endpoint{}, fmt.Errorf("VM %s/%s: %w", namespace, name, err)
		}
		return endpointOf(&vm)
	}
}

func endpointOf(vm *v1alpha2.VirtualMachine) (Endpoint, error) {
	ep := Endpoint{Namespace: vm.Namespace, Name: vm.Name, Address: vm.Status.IPAddress}
	switch vm.Status.Phase {
	case v1alpha2.MachineRunning, v1alpha2.MachineMigrating:
	default:
		phase := string(vm.Status.Phase)
		if phase == "" {
			phase = "not started yet"
		}
		return Endpoint{}, fmt.Errorf("%s is %s: only a Running VM can be reached (start it with `ferry v start -n %s %s`)",
			ep, phase, vm.Namespace, vm.Name)
	}
	if ep.Address == "" {
		return Endpoint{}, fmt.Errorf("%s runs but has no IP address (status.ipAddress is empty; under `ferry up --netns=false` VMs get no network)", ep)
	}
	for _, p := range vm.Status.VirtualMachinePods {
		if p.Active {
			ep.Pod = p.Name
		}
	}
	return ep, nil
}
