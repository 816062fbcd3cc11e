package up

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// child is a Ferry process that `up` runs: the controller or a node agent.
type child struct {
	name string
	argv []string
	log  string
	// holdWhile names a file whose presence keeps the child from being restarted.
	holdWhile string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	stopped bool
}

// start runs the child in its own process group; it dies with `up` (Pdeathsig).
func (c *child) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(c.log), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(c.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "\n=== %s started by ferry up at %s\n", c.name, time.Now().Format(time.RFC3339))
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", c.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.cmd, c.done = cmd, done
	return nil
}

// supervise restarts the child when it exits by itself, until it is stopped.
func (c *child) supervise(report func(string)) {
	for {
		c.mu.Lock()
		done := c.done
		c.mu.Unlock()
		<-done
		c.mu.Lock()
		stopped := c.stopped
		c.mu.Unlock()
		if stopped {
			return
		}
		if c.held() {
			report(fmt.Sprintf("%s is powered off (%s); it starts again with ferry node poweron", c.name, c.cmd.ProcessState))
			for c.held() {
				time.Sleep(200 * time.Millisecond)
				c.mu.Lock()
				stopped := c.stopped
				c.mu.Unlock()
				if stopped {
					return
				}
			}
		} else {
			report(fmt.Sprintf("%s exited (%s); restarting it (log: %s)", c.name, c.cmd.ProcessState, c.log))
			time.Sleep(time.Second) // pace restarts of a child that fails at once
		}
		c.mu.Lock()
		stopped = c.stopped
		c.mu.Unlock()
		if stopped {
			return
		}
		if err := c.start(); err != nil {
			report(err.Error())
			return
		}
	}
}

func (c *child) held() bool {
	if c.holdWhile == "" {
		return false
	}
	_, err := os.Stat(c.holdWhile)
	return err == nil
}

// stop sends SIGTERM and, after grace, SIGKILL to the child's whole process group.
func (c *child) stop(grace time.Duration) {
	c.mu.Lock()
	c.stopped = true
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Pid is the child's process id, or 0.
func (c *child) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}
