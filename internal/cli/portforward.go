package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// Transport modes of --transport.
const (
	transportAuto   = "auto"
	transportDirect = "direct"
	transportExec   = "exec"
)

// autoProbeTimeout is how long auto waits for the VM's address before it takes the API
// path: a routed guest answers a SYN in milliseconds even under TCG.
const autoProbeTimeout = 2 * time.Second

func portForwardCommand(g *Globals) *cobra.Command {
	var address, mode string
	var stdio bool
	cmd := &cobra.Command{
		Use:   "port-forward VM [LOCAL:]REMOTE...",
		Short: "Forward local ports to a VM's ports; --stdio VM PORT joins stdin/stdout to one (for ssh's ProxyCommand)",
		Long: "port-forward listens on --address and forwards each connection to the VM's port. A pair is\n" +
			"LOCAL:REMOTE, PORT (the same port on both sides) or :REMOTE (any free local port).\n" +
			"--transport direct dials the VM's address (status.ipAddress) from here, as under `ferry up`;\n" +
			"exec goes through the Kubernetes API (pods/exec of a connector in the VM's launcher pod, which\n" +
			"a real kubelet serves); auto (the default) is direct when the address answers within 2s.",
		Example: "  ferry v port-forward linux-vm 8080:80 2222:22\n  ferry v port-forward -n prod db :5432\n" +
			"  ssh -o ProxyCommand='ferry v port-forward --stdio linux-vm 22' user@linux-vm",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := g.target(args[0])
			if err != nil {
				return err
			}
			port, pairs, err := parseForwardPorts(stdio, args[1:])
			if err != nil {
				return err
			}
			f, err := g.forwarder(vm, mode)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if stdio {
				return f.stdio(ctx, port, os.Stdin, os.Stdout)
			}
			return f.listen(ctx, address, pairs, g.Out)
		},
	}
	cmd.Flags().StringVar(&address, "address", "127.0.0.1", "local address to listen on")
	cmd.Flags().BoolVar(&stdio, "stdio", false, "join stdin/stdout to the VM's PORT instead of listening (for ssh -o ProxyCommand)")
	cmd.Flags().StringVar(&mode, "transport", transportAuto, "how to reach the VM: auto, direct (its address from here) or exec (pods/exec through the Kubernetes API)")
	return cmd
}

// parseForwardPorts reads the ports after the VM: one PORT with --stdio, else pairs.
func parseForwardPorts(stdio bool, args []string) (port int, pairs []PortPair, err error) {
	if stdio {
		if len(args) != 1 {
			return 0, nil, fmt.Errorf("--stdio forwards one port: write `port-forward --stdio VM PORT`, got %d ports", len(args))
		}
		if port, err = parsePort(args[0], false); err != nil {
			return 0, nil, fmt.Errorf("--stdio: %w", err)
		}
		return port, nil, nil
	}
	for _, a := range args {
		p, err := parsePortPair(a)
		if err != nil {
			return 0, nil, err
		}
		pairs = append(pairs, p)
	}
	return 0, pairs, nil
}

// forwarder carries connections to one VM; resolve runs per connection so a VM that
// stopped is reported as such, and the API path follows the VM's current launcher pod.
type forwarder struct {
	namespace, vm string
	resolve       Resolver
	transport     Transport
	log           io.Writer
}

func (g *Globals) forwarder(vm vmRef, mode string) (*forwarder, error) {
	if mode != transportAuto && mode != transportDirect && mode != transportExec {
		return nil, fmt.Errorf("--transport %q: choose auto, direct or exec", mode)
	}
	f := &forwarder{namespace: vm.Namespace, vm: vm.Name, resolve: g.resolver, log: os.Stderr}
	direct := directTransport{timeout: 10 * time.Second}
	if mode == transportDirect && f.resolve != nil {
		f.transport = direct
		return f, nil
	}
	cfg, err := g.restConfig()
	if err != nil {
		return nil, err
	}
	if f.resolve == nil {
		c, err := newClient(cfg)
		if err != nil {
			return nil, err
		}
		f.resolve = vmEndpoint(c)
	}
	if mode == transportDirect {
		f.transport = direct
		return f, nil
	}
	api, err := newExecTransport(cfg)
	if err != nil {
		return nil, err
	}
	if mode == transportExec {
		f.transport = api
	} else {
		f.transport = &autoTransport{direct: directTransport{timeout: autoProbeTimeout}, api: api}
	}
	return f, nil
}

func (f *forwarder) dial(ctx context.Context, port int) (Stream, error) {
	ep, err := f.resolve(ctx, f.namespace, f.vm)
	if err != nil {
		return nil, err
	}
	return f.transport.Dial(ctx, ep, port)
}

// stdio joins in/out to the VM's port until the VM's side ends.
func (f *forwarder) stdio(ctx context.Context, port int, in io.Reader, out io.Writer) error {
	s, err := f.dial(ctx, port)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	return bridgeStdio(s, in, out)
}

// listen opens every pair's listener first, so a busy port fails the command before any
// forwarding starts, then serves them all until ctx ends.
func (f *forwarder) listen(ctx context.Context, address string, pairs []PortPair, out io.Writer) error {
	// Fail early, with the reason, if the VM cannot be reached at all.
	if _, err := f.resolve(ctx, f.namespace, f.vm); err != nil {
		return err
	}
	lns, err := openListeners(address, pairs)
	if err != nil {
		return err
	}
	for i, ln := range lns {
		fmt.Fprintf(out, "Forwarding from %s -> %s/%s:%d\n", ln.Addr(), f.namespace, f.vm, pairs[i].Remote)
	}
	return f.serveAll(ctx, lns, pairs)
}

func openListeners(address string, pairs []PortPair) ([]net.Listener, error) {
	var lns []net.Listener
	for _, p := range pairs {
		ln, err := net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(p.Local)))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listening for %d:%d: %w", p.Local, p.Remote, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// serveAll serves lns[i] to pairs[i].Remote until ctx ends or a listener fails, and
// closes them all.
func (f *forwarder) serveAll(ctx context.Context, lns []net.Listener, pairs []PortPair) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(lns))
	for i, ln := range lns {
		go func() { errc <- f.serve(ctx, ln, pairs[i].Remote) }()
	}
	var first error
	for range lns {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// serve accepts connections on ln and forwards each to the VM's port remote.
func (f *forwarder) serve(ctx context.Context, ln net.Listener, remote int) error {
	return acceptEach(ctx, ln, func(c *net.TCPConn) { f.handle(ctx, c, remote) })
}

// acceptEach accepts connections on a TCP listener until ctx ends (then it returns nil)
// and hands each to handle on a goroutine of its own.
func acceptEach(ctx context.Context, ln net.Listener, handle func(*net.TCPConn)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go handle(c.(*net.TCPConn))
	}
}

func (f *forwarder) handle(ctx context.Context, c *net.TCPConn, remote int) {
	s, err := f.dial(ctx, remote)
	if err != nil {
		fmt.Fprintf(f.log, "connection from %s: %v\n", c.RemoteAddr(), err)
		c.Close()
		return
	}
	if err := splice(c, s); err != nil {
		fmt.Fprintf(f.log, "connection from %s to %s/%s:%d: %v\n", c.RemoteAddr(), f.namespace, f.vm, remote, err)
	}
}
