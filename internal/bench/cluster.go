package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferryvm/ferry/internal/guestimage"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// UpProcess is a `ferry up` that the benchmark started.
type UpProcess struct {
	Cmd  *exec.Cmd
	done chan struct{}
	log  string // where its output goes
}

// otherFerryUp says why another `ferry up` seems to run on this machine, or "".
func otherFerryUp(port int) string {
	if m, _ := filepath.Glob("/run/netns/ferry-node-*"); len(m) > 0 {
		var names []string
		for _, p := range m {
			names = append(names, filepath.Base(p))
		}
		return "network namespaces " + strings.Join(names, ", ") + " exist"
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
		c.Close()
		return fmt.Sprintf("port %d is in use", port)
	}
	return ""
}

// startUpNodes runs `bin up --nodes nodes [extra...]` in stateDir and returns once it
// printed "Ferry is up". Its output goes to stateDir/ferry-up.log. It runs in its own process
// group (a Ctrl-C reaches only the benchmark, which then cleans up and stops it) and gets
// SIGTERM if the benchmark dies.
func startUpNodes(ctx context.Context, bin, stateDir string, port, nodes int, say func(string, ...any), extra ...string) (*UpProcess, error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(stateDir, "ferry-up.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args := append([]string{"up", "--state-dir", stateDir, "--nodes", strconv.Itoa(nodes), "--port", strconv.Itoa(port), "--sample-vm=false"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s up: %w", bin, err)
	}
	p := &UpProcess{Cmd: cmd, done: make(chan struct{}), log: logPath}
	up := make(chan struct{})
	var once sync.Once
	go func() {
		s := bufio.NewScanner(pr)
		for s.Scan() {
			fmt.Fprintln(logf, s.Text())
			if strings.HasPrefix(s.Text(), "Ferry is up") {
				once.Do(func() { close(up) })
			}
		}
		logf.Close()
	}()
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	shown := fmt.Sprintf("%s up --nodes %d --port %d", bin, nodes, port)
	if len(extra) > 0 {
		shown += " " + strings.Join(extra, " ")
	}
	say("Starting `%s` in %s…", shown, stateDir)
	t := time.NewTimer(5 * time.Minute)
	defer t.Stop()
	select {
	case <-up:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("ferry up exited before it was up; see %s:\n%s", logPath, tail(logPath, 20))
	case <-t.C:
		p.stop()
		return nil, fmt.Errorf("ferry up not up within 5 minutes; see %s", logPath)
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
}

// stop sends SIGTERM and waits for the process to end (SIGKILL after 60 s).
func (p *UpProcess) stop() { stopProcess(p.Cmd, p.done, 60*time.Second) }

// stopProcess sends cmd SIGTERM and waits until done is closed, with SIGKILL after grace.
func stopProcess(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// GrepLogs returns the lines of dir/*.log that contain any of words, at most max of them
// (the last ones), each prefixed with its file's name.
func GrepLogs(dir string, max int, words ...string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	var out []string
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		s := bufio.NewScanner(fh)
		s.Buffer(make([]byte, 64<<10), 1<<20)
		for s.Scan() {
			for _, w := range words {
				if w != "" && strings.Contains(s.Text(), w) {
					out = append(out, filepath.Base(f)+": "+s.Text())
					break
				}
			}
		}
		fh.Close()
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

var errStopped = errors.New("interrupted")

// Cluster is where a benchmark runs: a cluster it started, or one given by kubeconfig.
type Cluster struct {
	Kubeconfig, StateDir, LogsDir string
	Up                            *UpProcess
	temp                          bool
}

// OpenCluster attaches to the cluster of kubeconfig or, when it is empty, starts
// `ferry up --nodes nodes [upArgs...]` (bin) in stateDir, a temporary directory named
// prefix* when empty, after waiting for any other cluster on this machine to end.
func OpenCluster(ctx context.Context, bin, kubeconfig, stateDir, prefix string, port, nodes int, waitOther time.Duration, say func(string, ...any), upArgs ...string) (*Cluster, error) {
	c := &Cluster{Kubeconfig: kubeconfig, StateDir: stateDir}
	if kubeconfig == "" {
		if err := WaitNoOtherCluster(ctx, port, waitOther, say); err != nil {
			return nil, err
		}
		if c.StateDir == "" {
			// Short: launcher sockets live below it (see checkSocketPath).
			dir, err := os.MkdirTemp("", prefix)
			if err != nil {
				return nil, err
			}
			c.StateDir, c.temp = dir, true
		}
		if err := checkSocketPath(c.StateDir); err != nil {
			c.Close(false, say)
			return nil, err
		}
		up, err := startUpNodes(ctx, bin, c.StateDir, port, nodes, say, upArgs...)
		if err != nil {
			c.Close(true, say)
			return nil, err
		}
		c.Up = up
		c.Kubeconfig = filepath.Join(c.StateDir, "control-plane", "admin.kubeconfig")
		say("Cluster is up")
	} else if c.StateDir == "" {
		// `ferry up` keeps its kubeconfig in STATE/control-plane/.
		c.StateDir = filepath.Dir(filepath.Dir(kubeconfig))
	}
	c.LogsDir = filepath.Join(c.StateDir, "logs")
	if _, err := os.Stat(c.LogsDir); err != nil {
		c.LogsDir = ""
	}
	return c, nil
}

// Close stops a cluster the benchmark started and removes its temporary state directory
// unless keep (something failed, or the user asked).
func (c *Cluster) Close(keep bool, say func(string, ...any)) {
	if c.Up != nil {
		say("Stopping ferry up…")
		c.Up.stop()
		c.Up = nil
	}
	if !c.temp {
		return
	}
	if keep {
		say("State and logs kept in %s", c.StateDir)
		return
	}
	os.RemoveAll(c.StateDir)
}

// GuestAndClient builds (or finds cached) the guest image and connects to the cluster.
func GuestAndClient(ctx context.Context, kubeconfig string) (string, client.Client, error) {
	cacheDir, err := os.UserCacheDir()
	if err != nil {
		cacheDir = os.TempDir()
	}
	image, err := guestimage.Ensure(ctx, filepath.Join(cacheDir, "ferry", "guest"))
	if err != nil {
		return "", nil, err
	}
	c, err := NewClient(kubeconfig)
	return image, c, err
}

// Reporter is where a benchmark prints (w, else stdout) and its say, which stamps each line
// with the time.
func Reporter(w io.Writer) (io.Writer, func(string, ...any)) {
	if w == nil {
		w = os.Stdout
	}
	return w, func(format string, args ...any) {
		fmt.Fprintf(w, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}

// GuestMemory parses a --memory value; a guest needs at least 96 MiB.
func GuestMemory(s string) (resource.Quantity, error) {
	mem, err := resource.ParseQuantity(s)
	if err != nil {
		return mem, fmt.Errorf("--memory: %w", err)
	}
	if mem.Value()>>20 < 96 {
		return mem, fmt.Errorf("--memory %s: a guest needs at least 96Mi", s)
	}
	return mem, nil
}

func FirstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// WaitNoOtherCluster waits up to wait for another `ferry up` on this machine to end.
func WaitNoOtherCluster(ctx context.Context, port int, wait time.Duration, say func(string, ...any)) error {
	deadline := time.Now().Add(wait)
	announced := false
	for {
		why := otherFerryUp(port)
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("another `ferry up` seems to run on this machine (%s); only one can run at a time: wait for it (--wait-other) or benchmark it with --kubeconfig", why)
		}
		if !announced {
			say("Another `ferry up` runs (%s); waiting up to %s for it to end…", why, wait)
			announced = true
		}
		if err := Sleep(ctx, 5*time.Second); err != nil {
			return err
		}
	}
}

// FerryBinary is the absolute path of the ferry binary: flag, or ferry next to this
// executable, or bin/ferry.
func FerryBinary(flag string) (string, error) {
	path := flag
	if path == "" {
		path = "bin/ferry"
		if exe, err := os.Executable(); err == nil {
			if next := filepath.Join(filepath.Dir(exe), "ferry"); fileExists(next) {
				path = next
			}
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if !fileExists(abs) {
		return "", fmt.Errorf("ferry binary %s not found (run `make build`, or pass --ferry-bin)", abs)
	}
	return abs, nil
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}

// checkSocketPath refuses a state directory whose launcher sockets
// (STATE/nodes/node-N/pods/POD-UID/launcher.sock) would not fit the 107 bytes of a unix
// socket path: the launcher could not start then.
func checkSocketPath(stateDir string) error {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	p := filepath.Join(abs, "nodes", "node-2", "pods", "00000000-0000-0000-0000-000000000000", "launcher.sock")
	if len(p) > 107 {
		return fmt.Errorf("launcher sockets would be %d bytes long, more than a unix socket path allows (107): use a shorter --state-dir (%s)", len(p), p)
	}
	return nil
}
