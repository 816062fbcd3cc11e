package realnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Boot runs a node: it is the first process of the node's PID namespace, in the node's
// network namespace and a private mount namespace (see Command). It lays out the node's
// filesystem, starts containerd, loads the images, then kube-proxy and the kubelet, and
// runs until SIGTERM or until one of them exits. When it returns the node's PID namespace
// ends and the kernel kills every process left in it: containers, QEMUs, shims.
func Boot(configPath string, out io.Writer) error {
	raw, err := os.ReadFile(configPath)
	if err != nil {
		return err
	}
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("%s: %w", configPath, err)
	}
	if os.Getpid() != 1 {
		return errors.New("node-boot must be the first process of a PID namespace of its own (run by ferry up)")
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(out, "%s node-boot: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
	if err := c.mountFilesystem(); err != nil {
		return fmt.Errorf("laying out the node's filesystem: %w", err)
	}
	if err := c.makeCgroups(); err != nil {
		return fmt.Errorf("making the node's cgroups: %w", err)
	}
	r := newReaper()
	go r.run()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	containerd, err := r.start(out, "containerd", "--config", c.path(containerdConfig))
	if err != nil {
		return err
	}
	if err := waitSocket(ctx, c.path(containerdSocket), 30*time.Second, containerd); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	logf("containerd is up")
	for _, img := range c.Images {
		t := time.Now()
		imported, err := c.importImage(ctx, r, out, img)
		if err != nil {
			return err
		}
		if imported {
			logf("imported %s (%.1fs)", img.Ref, time.Since(t).Seconds())
		}
	}
	proxy, err := r.start(out, c.KubeProxy, "--config", c.path(kubeProxyConfig), "--hostname-override", c.Name, "--v", "1")
	if err != nil {
		return err
	}
	kubelet, err := r.start(out, c.Kubelet, c.kubeletArgs()...)
	if err != nil {
		return err
	}
	logf("kubelet and kube-proxy started")

	select {
	case <-ctx.Done():
		logf("stopping")
	case <-containerd.done:
		logf("containerd exited: %v", containerd.status())
	case <-proxy.done:
		logf("kube-proxy exited: %v", proxy.status())
	case <-kubelet.done:
		logf("kubelet exited: %v", kubelet.status())
	}
	// The kubelet first, so it does not report pods dying as containerd goes; the rest
	// of the node ends with this process.
	for _, p := range []*proc{kubelet, proxy, containerd} {
		p.stop(5 * time.Second)
	}
	if ctx.Err() == nil {
		return errors.New("a component of the node exited: the node goes down (ferry up starts it again)")
	}
	return nil
}

// makeCgroups makes the node's cgroup (CgroupRoot) in every hierarchy of the machine's
// cgroup v1: the kubelet puts its pods under it and requires it to exist.
func (c *Config) makeCgroups() error {
	hierarchies, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return err
	}
	for _, h := range hierarchies {
		root := filepath.Join("/sys/fs/cgroup", h.Name())
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			continue // not a hierarchy (e.g. a symlink to a co-mounted one), or v2
		}
		parent := root
		for _, part := range strings.Split(strings.Trim(c.CgroupRoot(), "/"), "/") {
			dir := filepath.Join(parent, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
			// A new cpuset has no CPUs nor memory nodes until given its parent's.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if v, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
					if cur, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(cur)) == "" {
						if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
							return err
						}
					}
				}
			}
			parent = dir
		}
	}
	return nil
}

// mountFilesystem gives the node its own view of the machine: sysfs of its network
// namespace (so /sys/class/net lists the node's links) with the machine's cgroup
// hierarchies bound back in, and the node's directories at the paths deploy/ names.
func (c *Config) mountFilesystem() error {
	// Nothing mounted here reaches the machine's mount namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making mounts private: %w", err)
	}
	stage := filepath.Join(c.Dir, "real", "cgroup-stage")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount("/sys/fs/cgroup", stage, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("keeping the cgroup hierarchies: %w", err)
	}
	if err := syscall.Mount("sysfs", "/sys", "sysfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting the node's sysfs: %w", err)
	}
	if err := syscall.Mount(stage, "/sys/fs/cgroup", "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("binding the cgroup hierarchies: %w", err)
	}
	_ = syscall.Unmount(stage, syscall.MNT_DETACH)
	for _, b := range c.binds() {
		if err := os.MkdirAll(b.source, 0o755); err != nil {
			return err
		}
		if err := os.MkdirAll(b.target, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount(b.source, b.target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("binding %s at %s: %w", b.source, b.target, err)
		}
	}
	return nil
}

type bind struct{ source, target string }

// binds are the node's own directories at the machine-wide paths a real node has them:
// the agent's state (deploy/'s hostPath /var/lib/ferry/node), the shared storage,
// /var/log (the kubelet writes pods' logs to /var/log/pods, whatever its root) and the
// kubelet's device-plugins directory under its --root-dir, where the agent's device
// plugin (deploy/'s hostPath /var/lib/kubelet/device-plugins) finds the kubelet's socket.
func (c *Config) binds() []bind {
	return []bind{
		{c.Dir, NodeStateDir},
		{c.StorageDir, StorageDir},
		{c.path("log"), "/var/log"},
		{c.path("kubelet", "device-plugins"), DevicePluginDir},
	}
}

// importImage loads an OCI archive into the node's containerd unless the node already
// has that archive's content (a stamp with its digest, kept in the node's directory).
func (c *Config) importImage(ctx context.Context, r *reaper, out io.Writer, img Image) (bool, error) {
	stamp := c.path("images", strings.NewReplacer("/", "_", ":", "_").Replace(img.Ref)+".digest")
	if got, err := os.ReadFile(stamp); err == nil && string(got) == img.Digest && img.Digest != "" {
		return false, nil
	}
	p, err := r.start(out, "ctr", "--address", c.path(containerdSocket), "--namespace", "k8s.io",
		"images", "import", img.Archive)
	if err != nil {
		return false, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	if st := p.status(); st != nil {
		return false, fmt.Errorf("importing %s into the node's containerd: %v", img.Archive, st)
	}
	if err := os.MkdirAll(filepath.Dir(stamp), 0o755); err != nil {
		return false, err
	}
	return true, os.WriteFile(stamp, []byte(img.Digest), 0o644)
}

func (c *Config) kubeletArgs() []string {
	args := []string{c.Kubelet,
		"--config", c.path(kubeletConfig),
		"--kubeconfig", c.path(kubeletKubeconfig),
		"--root-dir", c.path("kubelet"),
		"--cert-dir", c.path("kubelet", "pki"),
		"--hostname-override", c.Name,
		"--node-ip", c.IP,
		"--v", "1",
	}
	if len(c.Labels) > 0 {
		args = append(args, "--node-labels", strings.Join(c.Labels, ","))
	}
	return args[1:]
}

// waitSocket waits until a unix socket accepts connections, or p exits.
func waitSocket(ctx context.Context, path string, timeout time.Duration, p *proc) error {
	deadline := time.Now().Add(timeout)
	for {
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.status())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no socket at %s after %s", path, timeout)
		}
	}
}

// reaper waits for every process of the node's PID namespace, as its first process
// must: the shims containerd leaves are re-parented to it. Processes it started
// itself are reported to their proc.
type reaper struct {
	mu    sync.Mutex
	procs map[int]*proc
	// early holds statuses of processes that ended before start recorded them.
	early map[int]syscall.WaitStatus
}

type proc struct {
	name string
	pid  int
	done chan struct{}
	ws   syscall.WaitStatus
}

func newReaper() *reaper {
	return &reaper{procs: map[int]*proc{}, early: map[int]syscall.WaitStatus{}}
}

func (r *reaper) run() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			// No children right now.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		r.mu.Lock()
		if p, ok := r.procs[pid]; ok {
			p.ws = ws
			close(p.done)
			delete(r.procs, pid)
		} else {
			r.early[pid] = ws
		}
		r.mu.Unlock()
	}
}

// start runs a program with out as its output; the reaper reports its end.
func (r *reaper) start(out io.Writer, name string, args ...string) (*proc, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(path, append([]string{path}, args...), &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, fdOf(out), fdOf(out)},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: filepath.Base(name), pid: pid, done: make(chan struct{})}
	if ws, ok := r.early[pid]; ok {
		p.ws = ws
		close(p.done)
		delete(r.early, pid)
	} else {
		r.procs[pid] = p
	}
	return p, nil
}

func fdOf(w io.Writer) uintptr {
	if f, ok := w.(*os.File); ok {
		return f.Fd()
	}
	return 2
}

// status is nil for a process that exited with 0, else what ended it.
func (p *proc) status() error {
	if p.ws.Exited() && p.ws.ExitStatus() == 0 {
		return nil
	}
	if p.ws.Signaled() {
		return fmt.Errorf("%s killed by %s", p.name, p.ws.Signal())
	}
	return fmt.Errorf("%s exited with %d", p.name, p.ws.ExitStatus())
}

// stop sends SIGTERM to the process's group, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		<-p.done
	}
}
