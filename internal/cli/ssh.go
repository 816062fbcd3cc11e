package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// sshOptions is what ssh and scp share: how the system client reaches the VM through
// `ferry v port-forward --stdio` and how it authenticates.
type sshOptions struct {
	// Self is this binary, run by ssh as the ProxyCommand.
	Self      string
	Namespace string
	Transport string
	// Port is the guest's sshd port.
	Port     int
	Identity string
	User     string
	// Extra are the caller's own ssh/scp options (--local-ssh-opts and after --).
	Extra []string
}

func (o *sshOptions) flags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.Identity, "identity-file", "i", "", "private key to log in with (ssh -i)")
	fs.StringVarP(&o.User, "username", "l", "", "user to log in as (the user@ in front of the VM wins)")
	fs.IntVar(&o.Port, "port", 22, "the guest's sshd port")
	fs.StringVar(&o.Transport, "transport", transportAuto, "how to reach the VM: auto, direct or exec (see port-forward)")
	fs.StringArrayVar(&o.Extra, "local-ssh-opts", nil, "an option for the system ssh/scp, repeatable (e.g. --local-ssh-opts=-oStrictHostKeyChecking=no)")
	// d8's flag to pick its local ssh over a built-in one: Ferry always runs the local one.
	fs.Bool("local-ssh", true, "use the system ssh (always; accepted for d8 compatibility)")
	_ = fs.MarkHidden("local-ssh")
}

// hostAlias names the VM in known_hosts: keyed by name and namespace, not address, so the
// entry follows the VM and a VM recreated under the same name meets ssh's host key warning.
func hostAlias(vm, namespace string) string { return "vm." + vm + "." + namespace }

// common are the options both ssh and scp get, up to the caller's own.
func (o *sshOptions) common(vm string) []string {
	proxy := []string{o.Self, "v", "port-forward", "--stdio", "-n", o.Namespace}
	if o.Transport != "" && o.Transport != transportAuto {
		proxy = append(proxy, "--transport", o.Transport)
	}
	proxy = append(proxy, vm, strconv.Itoa(o.Port))
	args := []string{"-o", "ProxyCommand=" + proxyCommandLine(proxy), "-o", "HostKeyAlias=" + hostAlias(vm, o.Namespace)}
	if o.Identity != "" {
		args = append(args, "-i", o.Identity)
	}
	args = append(args, o.Extra...)
	// Trust on first use: the first login records the VM's host key under its alias, and a
	// changed key is refused as ssh refuses it. Last, so that the caller's own choice (ssh
	// takes the first value of an option) wins.
	return append(args, "-o", "StrictHostKeyChecking=accept-new")
}

func (o *sshOptions) destination(user, vm string) string {
	if user == "" {
		user = o.User
	}
	if user != "" {
		return user + "@" + hostAlias(vm, o.Namespace)
	}
	return hostAlias(vm, o.Namespace)
}

// sshArgs is the argv of `ssh` (without "ssh") that logs in to [user@]vm and runs command
// if there is one. "--" ends ssh's options, so neither the destination nor the command is
// read as one.
func sshArgs(o sshOptions, user, vm, command string) []string {
	args := append(o.common(vm), "--", o.destination(user, vm))
	if command != "" {
		args = append(args, command)
	}
	return args
}

// scpArgs is the argv of `scp` that copies src to dst, one of them "[user@]VM:path";
// target names the VM and its namespace. It returns the VM too, for the caller to check
// before scp runs.
func scpArgs(o sshOptions, recursive bool, src, dst string, target func(string) (vmRef, error)) (args []string, vm vmRef, err error) {
	s, err := parseSCPPath(src)
	if err != nil {
		return nil, vmRef{}, err
	}
	d, err := parseSCPPath(dst)
	if err != nil {
		return nil, vmRef{}, err
	}
	switch {
	case s.VM != "" && d.VM != "":
		return nil, vmRef{}, fmt.Errorf("both %q and %q name a VM: copy between two VMs through this machine in two steps", src, dst)
	case s.VM == "" && d.VM == "":
		return nil, vmRef{}, fmt.Errorf("neither %q nor %q names a VM: write one side as [user@]VM:path", src, dst)
	}
	if vm, err = target(s.VM + d.VM); err != nil {
		return nil, vmRef{}, err
	}
	for _, p := range []*scpPath{&s, &d} {
		if p.VM != "" {
			p.VM = vm.Name
		}
	}
	o.Namespace = vm.Namespace
	args = o.common(vm.Name)
	if recursive {
		args = append(args, "-r")
	}
	return append(args, "--", s.scpArg(&o), d.scpArg(&o)), vm, nil
}

// scpPath is one side of scp: a local path, or a path on a VM.
type scpPath struct {
	User, VM, Path string
}

func (p scpPath) scpArg(o *sshOptions) string {
	if p.VM == "" {
		return p.Path
	}
	return o.destination(p.User, p.VM) + ":" + p.Path
}

// parseSCPPath reads "[user@]VM:path" as a VM's path and anything else as a local one. As
// with scp, a colon after a slash is part of a local name ("./a:b", "/tmp/a:b").
func parseSCPPath(s string) (scpPath, error) {
	if s == "" {
		return scpPath{}, errors.New("empty path: write a local path or [user@]VM:path")
	}
	host, path, found := strings.Cut(s, ":")
	if !found || strings.Contains(host, "/") {
		return scpPath{Path: s}, nil
	}
	user, vm, err := parseUserVM(host)
	if err != nil {
		return scpPath{}, fmt.Errorf("%w (a VM's path is [user@]VM:path; write ./%s for a local file)", err, s)
	}
	return scpPath{User: user, VM: vm, Path: path}, nil
}

// exitError carries the system client's exit code out of the command; it prints nothing,
// since ssh has already said what went wrong.
type exitError struct{ code int }

func (e exitError) Error() string { return "exit status " + strconv.Itoa(e.code) }

// ExitCode is the process exit code err asks for: ssh's own after `ferry v ssh`, else 1.
func ExitCode(err error) int {
	var e exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

// runClient runs the system ssh or scp in the foreground and returns its exit status.
func (g *Globals) runClient(cmd *cobra.Command, name string, args []string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("%s not found: install the OpenSSH client (apt-get install openssh-client)", name)
	}
	c := exec.Command(path, args...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The ProxyCommand must find the same cluster, whichever way this process found it.
	c.Env = append(os.Environ(), "KUBECONFIG="+g.Kubeconfig())
	// Ctrl-C belongs to ssh (it reaches the whole foreground group); catching it here,
	// not ignoring it, keeps ssh's default disposition and lets its exit code through.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		code := ee.ExitCode()
		if code < 0 { // killed by a signal
			code = 255
		}
		return exitError{code: code}
	}
	return err
}

// checkReachable says why a VM cannot be reached (stopped, no address, not found) before
// ssh runs, where the reason would be lost among ssh's own messages.
func (g *Globals) checkReachable(cmd *cobra.Command, vm vmRef) error {
	resolve := g.resolver
	if resolve == nil {
		c, err := g.client()
		if err != nil {
			return err
		}
		resolve = vmEndpoint(c)
	}
	_, err := resolve(cmd.Context(), vm.Namespace, vm.Name)
	return err
}

func (g *Globals) sshOptions(o *sshOptions) error {
	if o.Transport != transportAuto && o.Transport != transportDirect && o.Transport != transportExec {
		return fmt.Errorf("--transport %q: choose auto, direct or exec", o.Transport)
	}
	if o.Port < 1 || o.Port > 65535 {
		return fmt.Errorf("--port %d: a port is 1-65535", o.Port)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	o.Self = self
	return nil
}

func sshCommand(g *Globals) *cobra.Command {
	var o sshOptions
	var command string
	cmd := &cobra.Command{
		Use:   "ssh [user@]VM [-- SSH-OPTIONS...]",
		Short: "Log in to a VM with the system ssh, through `ferry v port-forward --stdio` (-c runs one command)",
		Long: "ssh runs the system ssh with ProxyCommand `ferry v port-forward --stdio VM 22` and HostKeyAlias\n" +
			"vm.NAME.NAMESPACE (known_hosts follows the VM, not its address). Arguments after -- go to ssh\n" +
			"before the destination. The exit code is ssh's (the remote command's with -c).",
		Example: "  ferry v ssh cloud@linux-vm -i ~/.ssh/id_ed25519\n  ferry v ssh cloud@linux-vm -c nproc\n" +
			"  ferry v ssh -n prod cloud@db -- -t -o StrictHostKeyChecking=accept-new",
		Args: func(cmd *cobra.Command, args []string) error {
			if n := cmd.ArgsLenAtDash(); n > 1 || (n < 0 && len(args) != 1) || n == 0 {
				return errors.New("write `ferry v ssh [user@]VM`; ssh's own options go after --")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			user, arg, err := parseUserVM(args[0])
			if err != nil {
				return err
			}
			vm, err := g.target(arg)
			if err != nil {
				return err
			}
			if err := g.sshOptions(&o); err != nil {
				return err
			}
			o.Namespace = vm.Namespace
			o.Extra = append(o.Extra, args[1:]...)
			if err := g.checkReachable(cmd, vm); err != nil {
				return err
			}
			return g.runClient(cmd, "ssh", sshArgs(o, user, vm.Name, command))
		},
	}
	o.flags(cmd.Flags())
	cmd.Flags().StringVarP(&command, "command", "c", "", "run this command on the VM instead of a login shell")
	return cmd
}

func scpCommand(g *Globals) *cobra.Command {
	var o sshOptions
	var recursive bool
	cmd := &cobra.Command{
		Use:   "scp SRC DST [-- SCP-OPTIONS...]",
		Short: "Copy files to or from a VM with the system scp; the VM's side is [user@]VM:path",
		Example: "  ferry v scp -i ~/.ssh/id_ed25519 ./app.tar cloud@linux-vm:/tmp/\n" +
			"  ferry v scp -r cloud@linux-vm:/var/log/ ./vm-logs",
		Args: func(cmd *cobra.Command, args []string) error {
			if n := cmd.ArgsLenAtDash(); n >= 0 && n != 2 || n < 0 && len(args) != 2 {
				return errors.New("write `ferry v scp SRC DST` with one side [user@]VM:path; scp's own options go after --")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.sshOptions(&o); err != nil {
				return err
			}
			o.Extra = append(o.Extra, args[2:]...)
			a, vm, err := scpArgs(o, recursive, args[0], args[1], g.target)
			if err != nil {
				return err
			}
			if err := g.checkReachable(cmd, vm); err != nil {
				return err
			}
			return g.runClient(cmd, "scp", a)
		},
	}
	o.flags(cmd.Flags())
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "copy directories recursively")
	return cmd
}

// proxyCommandLine writes argv as ssh's ProxyCommand: ssh expands %-tokens in it, then
// hands it to the user's shell, so each word is %-escaped and shell-quoted.
func proxyCommandLine(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = strings.ReplaceAll(shellQuote(a), "%", "%%")
	}
	return strings.Join(words, " ")
}

func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
