package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ferryvm/ferry/internal/launcher"
)

// escapeByte (Ctrl+]) ends an interactive console, as in d8 and virtctl: in a raw
// terminal Ctrl+C goes to the guest.
const escapeByte = 0x1d

func consoleCommand(g *Globals) *cobra.Command {
	var logOnly bool
	var mode string
	cmd := &cobra.Command{
		Use:   "console VM",
		Short: "Connect to a VM's serial console (Ctrl+] leaves); --log prints what the guest wrote",
		Long: "console joins this terminal to the VM's serial console, after the last lines the guest wrote; Ctrl+] leaves.\n" +
			"Under `ferry up` it reaches the launcher's run directory on this machine; elsewhere (--transport exec) it goes\n" +
			"through the Kubernetes API: pods/exec of `ferry-launcher console` in the VM's launcher pod.",
		Example: "  ferry v console linux-vm\n  ferry v console linux-vm.project-1 --log\n  echo poweroff | ferry v console -n project-1 linux-vm",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			vm, err := g.target(args[0])
			if err != nil {
				return err
			}
			r, err := g.relays(mode)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			pod, err := r.pod(ctx, vm)
			if err != nil {
				return err
			}
			if logOnly {
				s, err := r.open(ctx, pod, launcher.RelayConsoleLog)
				if err != nil {
					return err
				}
				defer s.Close()
				s.CloseWrite()
				_, err = io.Copy(g.Out, s)
				return err
			}
			s, err := r.open(ctx, pod, launcher.RelayConsole)
			if err != nil {
				return err
			}
			defer s.Close()
			fmt.Fprintf(os.Stderr, "Successfully connected to %s console (node %s). The escape sequence is ^]\n", vm.Name, pod.Spec.NodeName)
			return attachTerminal(ctx, s, os.Stdin, g.Out)
		},
	}
	cmd.Flags().BoolVar(&logOnly, "log", false, "print the guest's serial output so far and exit")
	cmd.Flags().StringVar(&mode, "transport", relayAuto, "how to reach the console: auto, local (the launcher's run directory on this machine, as under ferry up) or exec (pods/exec through the Kubernetes API)")
	return cmd
}

// attachTerminal joins in and out to a console stream until the stream ends or, from a
// terminal, Ctrl+] is typed. A terminal is put in raw mode meanwhile, so keys reach the
// guest as typed. From a pipe, the end of in is passed on and the guest's output is shown
// until the far end lets go (launcher.Relay lingers a moment for the guest's answer).
func attachTerminal(ctx context.Context, s Stream, in *os.File, out io.Writer) error {
	var r io.Reader = in
	if fd := int(in.Fd()); term.IsTerminal(fd) {
		state, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer term.Restore(fd, state)
		r = &untilEscape{r: in}
	}
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	escaped := make(chan struct{})
	go func() {
		if _, err := io.Copy(s, r); errors.Is(err, errEscape) {
			close(escaped) // before the stream closes, so that its reader knows why
			s.Close()
			return
		}
		s.CloseWrite()
	}()
	_, err := io.Copy(out, s)
	select {
	case <-escaped:
		return nil
	default:
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// errEscape ends the copy from a terminal at Ctrl+].
var errEscape = errors.New("escape sequence typed")

// untilEscape reads a terminal until Ctrl+]; what was typed before it in the same read
// still goes to the guest.
type untilEscape struct {
	r    io.Reader
	done bool
}

func (u *untilEscape) Read(p []byte) (int, error) {
	if u.done {
		return 0, errEscape
	}
	n, err := u.r.Read(p)
	if i := bytes.IndexByte(p[:n], escapeByte); i >= 0 {
		u.done = true
		if i == 0 {
			return 0, errEscape
		}
		return i, nil
	}
	return n, err
}
