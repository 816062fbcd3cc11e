package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ferryvm/ferry/internal/launcher"
)

func vncCommand(g *Globals) *cobra.Command {
	var address, mode string
	var port int
	var proxyOnly bool
	cmd := &cobra.Command{
		Use:   "vnc VM",
		Short: "Serve a VM's screen (VNC) on a local port for a VNC viewer, until Ctrl+C",
		Long: "vnc listens on --address:--port (a free port by default), prints where, and joins each VNC viewer that\n" +
			"connects to the VM's display: QEMU's VNC server on a unix socket of the launcher's run directory (no network\n" +
			"listener), reached as console reaches the serial console (--transport).",
		Example: "  ferry v vnc linux-vm\n  ferry v vnc linux-vm.project-1 --port 5900   # then: vncviewer 127.0.0.1::5900\n" +
			"  ferry v vnc linux-vm --proxy-only             # prints {\"port\":N}, as d8's",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := g.target(args[0])
			if err != nil {
				return err
			}
			r, err := g.relays(mode)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Fail early, with the reason, if the VM does not run.
			if _, err := r.pod(ctx, vm); err != nil {
				return err
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(port)))
			if err != nil {
				return err
			}
			at := ln.Addr().(*net.TCPAddr)
			if proxyOnly {
				fmt.Fprintf(g.Out, "{\"port\":%d}\n", at.Port)
			} else {
				fmt.Fprintf(g.Out, "VNC of VM %s at %s (e.g. vncviewer %s::%d); Ctrl+C stops\n", vm, at, at.IP, at.Port)
			}
			return serveVNC(ctx, ln, func(ctx context.Context) (Stream, error) {
				pod, err := r.pod(ctx, vm)
				if err != nil {
					return nil, err
				}
				return r.open(ctx, pod, launcher.RelayVNC)
			})
		},
	}
	cmd.Flags().StringVar(&address, "address", "127.0.0.1", "local address to listen on")
	cmd.Flags().IntVar(&port, "port", 0, "local port to listen on (0: a free one)")
	cmd.Flags().BoolVar(&proxyOnly, "proxy-only", false, "print only {\"port\":N} (d8's machine-readable form)")
	cmd.Flags().StringVar(&mode, "transport", relayAuto, "how to reach the VM's display: auto, local or exec (see console)")
	return cmd
}

// serveVNC joins each viewer that connects to ln to a stream from open (the VM's VNC
// server), until ctx ends. Each connection opens its own, so a viewer that reconnects
// after a live migration reaches the VM where it runs now.
func serveVNC(ctx context.Context, ln net.Listener, open func(context.Context) (Stream, error)) error {
	return acceptEach(ctx, ln, func(c *net.TCPConn) {
		s, err := open(ctx)
		if err == nil {
			err = splice(c, s)
		} else {
			c.Close()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "viewer %s: %v\n", c.RemoteAddr(), err)
		}
	})
}
