package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Container is one running container of a pod as a Runtime started it.
type Container interface {
	// ID names it in the pod's status (a process id for processes).
	ID() string
	// Wait blocks until it has ended and returns its exit code (137 when killed).
	Wait() int
	// Terminate asks it to stop gracefully (SIGTERM to a launcher).
	Terminate()
	// Kill ends it and everything below it at once.
	Kill()
}

// Runtime starts a pod's container: cmd is its command and arguments (the first being
// "ferry-launcher", or "ferry" followed by "launcher" for pods of releases before
// ferry-launcher), env its environment, dir its run directory, log where its output goes.
type Runtime func(cmd []string, env []string, dir string, log *os.File) (Container, error)

// process is one running container of a pod: a launcher and, below it, QEMU.
type process struct {
	uid     types.UID
	runDir  string
	cmd     Container
	started time.Time
	done    chan struct{}
	// kick makes the watch probe the launcher at once (a migration was just started).
	kick chan struct{}

	mu         sync.Mutex
	exitCode   int
	finishedAt time.Time
	guest      GuestState
	stopping   bool
	// migrateReq is the migration request this process was given; aborted, whether it was
	// told to cancel it.
	migrateReq string
	aborted    bool
	// progressAt is when the migration's progress was last written to the pod.
	progressAt time.Time
	// hotplugReq is the hot-plug request (AnnotationHotplug) the launcher took last.
	hotplugReq string
}

// markStopping records that the process is being stopped; false if it already was, so one
// stop runs at a time.
func (p *process) markStopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	already := p.stopping
	p.stopping = true
	return !already
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// runDirOf is where a pod's launcher keeps its sockets and the guest's serial log. It is
// named by the pod's UID alone: unix socket paths must stay under 108 bytes.
func (k *Kubelet) runDirOf(pod *corev1.Pod) string {
	return filepath.Join(k.o.StateDir, "pods", string(pod.UID))
}

// maxSocketPath is the longest unix socket path Linux takes (sun_path less its NUL).
const maxSocketPath = 107

// longestSocket is the longest socket name a launcher makes in its run directory.
const longestSocket = "/launcher.sock"

// launcherOnly refuses any pod but a launcher pod as Ferry's controller makes it: this
// stand-in runs processes as root on the node, so a pod a tenant wrote must never run here.
// Only the controller can create a pod with Ferry's launcher label (deploy/base's
// ValidatingAdmissionPolicy ferry-launcher-pods); on top of that, the one command it runs
// is ferry-launcher (or `ferry launcher`, as pods of releases before it name it), and the
// environment is the agent's own: none of the pod's variables (FERRY_* are set below to
// the node's values), so that no LD_PRELOAD or PATH of a pod reaches a root process.
func launcherOnly(pod *corev1.Pod) error {
	if _, ok := pod.Labels[v1alpha2.LabelLauncher]; !ok {
		return fmt.Errorf("the Ferry node agent runs only Ferry's launcher pods (label %s); this node runs no other pod", v1alpha2.LabelLauncher)
	}
	c := pod.Spec.Containers[0]
	if !isLauncher(c) {
		return fmt.Errorf("the Ferry node agent runs only the command \"%s\" (or \"ferry launcher\"); container %s has command %q and arguments %q", LauncherCommand, c.Name, c.Command, c.Args)
	}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "FERRY_") {
			return fmt.Errorf("the Ferry node agent sets a launcher's environment itself; container %s sets %s", c.Name, e.Name)
		}
	}
	return nil
}

// LauncherCommand is the command of launcher pods, run as Options.LauncherExecutable.
const LauncherCommand = "ferry-launcher"

// isLauncher tells whether a container runs a launcher: ferry-launcher, or `ferry launcher`
// (pods of releases before ferry-launcher, which Options.Executable runs).
func isLauncher(c corev1.Container) bool {
	if slices.Equal(c.Command, []string{LauncherCommand}) {
		return true
	}
	return slices.Equal(c.Command, []string{"ferry"}) && len(c.Args) > 0 && c.Args[0] == "launcher"
}

// start runs the pod's container as a process in its own process group, so that stopping
// it reaches QEMU too. Only Ferry's own commands run here: this is no container runtime.
func (k *Kubelet) start(ctx context.Context, pod *corev1.Pod) (*process, error) {
	if len(pod.Spec.Containers) != 1 {
		return nil, fmt.Errorf("the Ferry node agent runs pods of exactly one container; pod has %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if err := launcherOnly(pod); err != nil {
		return nil, err
	}
	runDir := k.runDirOf(pod)
	if n := len(runDir) + len(longestSocket); n > maxSocketPath {
		return nil, fmt.Errorf("the node's state directory %s is too long: the launcher's socket path would be %d bytes, Linux allows %d; use a shorter --state-dir", k.o.StateDir, n, maxSocketPath)
	}
	if err := os.MkdirAll(runDir, 0o750); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(runDir, "launcher.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	argv := append(append([]string{}, c.Command...), c.Args...)
	// No volume is mounted: the launcher runs on the node's own filesystem. Ferry's
	// variables (FERRY_*) name paths in the pod's mounts and fields of the pod; they are
	// set here to the node's paths and the pod's values instead.
	env := []string{
		"FERRY_RUN_DIR=" + runDir,
		"FERRY_POD_NAME=" + pod.Name,
		"FERRY_POD_NAMESPACE=" + pod.Namespace,
		"FERRY_POD_UID=" + string(pod.UID),
		"FERRY_NODE_NAME=" + k.o.NodeName,
		"FERRY_NODE_IP=" + k.o.NodeIP,
	}
	env = append(env, k.o.LauncherEnv...)
	run := k.o.Runtime
	if run == nil {
		run = k.execRuntime
	}
	cmd, err := run(argv, env, runDir, logf)
	if err != nil {
		return nil, fmt.Errorf("starting the launcher: %w", err)
	}
	p := &process{uid: pod.UID, runDir: runDir, cmd: cmd, started: time.Now(), done: make(chan struct{}), kick: make(chan struct{}, 1)}
	go k.watch(ctx, p)
	return p, nil
}

// closeWatch is how often a launcher is probed while it starts or migrates.
const closeWatch = 100 * time.Millisecond

// watch waits for the process to end and probes its guest meanwhile; it wakes the pod's
// sync whenever something a status shows has changed.
func (k *Kubelet) watch(ctx context.Context, p *process) {
	go func() {
		code := p.cmd.Wait()
		p.mu.Lock()
		p.exitCode, p.finishedAt = code, time.Now()
		p.mu.Unlock()
		close(p.done)
		k.queue.Add(p.uid)
	}()
	if k.o.Probe == nil {
		return
	}
	// A young launcher is watched closely: a migration target publishes where it listens,
	// and a guest its first heartbeat, on the VM's critical path (a first look after a
	// whole second delayed every migration's target by up to that).
	interval := closeWatch
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.done:
			return
		case <-p.kick:
		case <-time.After(interval):
		}
		g, err := k.o.Probe(ctx, p.runDir)
		if err != nil {
			continue
		}
		p.mu.Lock()
		old := p.guest
		p.guest = g
		p.mu.Unlock()
		if guestChanged(old, g) {
			k.queue.Add(p.uid)
		}
		// A migration's switchover is watched closely too: its end is on the VM's critical
		// path.
		interval = time.Second
		if g.migrating() || time.Since(p.started) < 15*time.Second {
			interval = closeWatch
		}
	}
}

func sameProgress(a, b *v1alpha2.MigrationProgress) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// guestChanged tells whether anything a pod's status shows of its guest changed.
func guestChanged(a, b GuestState) bool {
	ga, ra, _ := guestCondition(a)
	gb, rb, _ := guestCondition(b)
	aa, _, ma := agentCondition(a)
	ab, _, mb := agentCondition(b)
	return ga != gb || ra != rb || aa != ab || ma != mb ||
		a.IncomingURI != b.IncomingURI || !sameProgress(a.Migration, b.Migration) || !sameBlockDevices(a.BlockDevices, b.BlockDevices)
}

// ready tells whether QEMU runs the guest's vCPUs. Call with p.mu held.
func (k *Kubelet) ready(p *process) bool {
	status, _, _ := guestCondition(p.guest)
	return status == corev1.ConditionTrue
}

// stop ends the process: SIGTERM to the launcher (which shuts the guest down), then
// SIGKILL to the whole group after grace.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Terminate()
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Kill()
		<-p.done
	}
	// QEMU may linger a moment after its launcher: make sure the group is gone.
	p.cmd.Kill()
}

// execRuntime runs the container as a process of k.o.LauncherExecutable (ferry-launcher)
// or k.o.Executable (ferry) in its own process group, so that stopping it reaches QEMU too.
func (k *Kubelet) execRuntime(argv, env []string, dir string, log *os.File) (Container, error) {
	exe := k.o.Executable
	if argv[0] == LauncherCommand {
		exe = k.o.LauncherExecutable
	}
	cmd := exec.Command(exe, argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	// The launcher dies with the agent (a node's processes go down together) and QEMU with
	// the launcher; a new agent finds their pods and reports them lost.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return execContainer{cmd}, nil
}

type execContainer struct{ cmd *exec.Cmd }

func (c execContainer) ID() string { return strconv.Itoa(c.cmd.Process.Pid) }

func (c execContainer) Wait() int {
	err := c.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if code := ee.ExitCode(); code >= 0 {
			return code
		}
		return 137 // killed by a signal
	}
	return 0
}

func (c execContainer) Terminate() { _ = c.cmd.Process.Signal(syscall.SIGTERM) }

func (c execContainer) Kill() { _ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL) }

// terminationMessage is what the launcher left to explain its exit.
func (p *process) terminationMessage() string {
	b, err := os.ReadFile(filepath.Join(p.runDir, "termination-message"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// stopAll ends every process of the node (the node is going down).
func (k *Kubelet) stopAll() {
	k.mu.Lock()
	procs := make([]*process, 0, len(k.procs))
	for _, p := range k.procs {
		procs = append(procs, p)
	}
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(3 * time.Second) })
	}
	wg.Wait()
}
