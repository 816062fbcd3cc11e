package watchdog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// The protocol of the watchdog process: one request per line, `arm <milliseconds>`,
// `feed` or `disarm`, each answered by one line, `ok` or `error <message>`.
const (
	replyOK        = "ok"
	replyError     = "error "
	notArmedReason = "not armed"
)

// Serve is the watchdog process of one node under `ferry up`, where nodes are process
// trees on one machine and have no watchdog device. It listens on the unix socket at
// socketPath and runs the node's one countdown for whoever connects. When the countdown
// expires it calls fire with the reason, which resets the node (see KillNode), and is
// disarmed again: the node's agent arms it when it comes back. A client that goes away
// without disarming leaves the countdown running, as a killed or frozen agent cannot stop
// a real watchdog either.
//
// Serve returns nil when ctx is done, after fire has returned if it was running. Its
// countdown ends with it: stopping the watchdog process does not reset the node.
func Serve(ctx context.Context, socketPath string, fire func(reason string), log logr.Logger) error {
	if err := removeStaleSocket(socketPath); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(socketPath), 0o755); err != nil {
		return err
	}
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return err
	}
	// Whoever can connect can get the node reset.
	if err := os.Chmod(socketPath, 0o600); err != nil {
		ln.Close()
		return err
	}
	cd := &countdown{fire: fire, log: log}
	s := &server{cd: cd, log: log, conns: map[net.Conn]bool{}}
	log.Info("Watchdog started", "socket", socketPath)

	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		ln.Close()
		s.closeConns()
	}()
	var acceptErr error
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				acceptErr = fmt.Errorf("watchdog %s: %w", socketPath, err)
			}
			break
		}
		s.serve(conn)
	}
	close(stopped)
	s.wg.Wait()
	cd.stop()
	return acceptErr
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("watchdog socket %s exists and is not a socket", path)
	}
	return os.Remove(path)
}

type server struct {
	cd  *countdown
	log logr.Logger
	wg  sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

func (s *server) serve(conn net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		conn.Close()
		return
	}
	s.conns[conn] = true
	s.wg.Go(func() {
		defer func() {
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
			conn.Close()
		}()
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			reply := replyOK
			if err := s.handle(sc.Text()); err != nil {
				reply = replyError + err.Error()
			}
			if _, err := conn.Write([]byte(reply + "\n")); err != nil {
				return
			}
		}
	})
}

func (s *server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for conn := range s.conns {
		conn.Close()
	}
}

func (s *server) handle(line string) error {
	f := strings.Fields(line)
	switch {
	case len(f) == 2 && f[0] == "arm":
		ms, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond) {
			return fmt.Errorf("arm needs a positive number of milliseconds, not %q", f[1])
		}
		timeout := time.Duration(ms) * time.Millisecond
		s.cd.arm(timeout)
		s.log.Info("Watchdog armed", "timeout", timeout)
		return nil
	case len(f) == 1 && f[0] == "feed":
		return s.cd.feed()
	case len(f) == 1 && f[0] == "disarm":
		if s.cd.disarm() {
			s.log.Info("Watchdog disarmed")
		}
		return nil
	}
	return fmt.Errorf("unknown request %q (want arm <milliseconds>, feed or disarm)", line)
}

// countdown is the node's one timer. Every change starts a new generation, so a timer
// that went off just as it was fed or disarmed finds itself stale and does nothing.
type countdown struct {
	fire  func(reason string)
	log   logr.Logger
	fires sync.WaitGroup

	mu      sync.Mutex
	armed   bool
	stopped bool
	timeout time.Duration
	fed     time.Time
	gen     uint64
	timer   *time.Timer
}

func (c *countdown) arm(timeout time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed, c.timeout = true, timeout
	c.restartLocked()
}

func (c *countdown) feed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.armed {
		return errors.New(notArmedReason)
	}
	c.restartLocked()
	return nil
}

// disarm stops the countdown and reports whether it was running.
func (c *countdown) disarm() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.armed
	c.armed = false
	c.cancelLocked()
	return was
}

// stop ends the countdown for good (the server is stopping) and waits for a fire that
// is under way.
func (c *countdown) stop() {
	c.mu.Lock()
	c.stopped = true
	c.cancelLocked()
	c.mu.Unlock()
	c.fires.Wait()
}

func (c *countdown) cancelLocked() {
	c.gen++
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
}

func (c *countdown) restartLocked() {
	c.cancelLocked()
	if c.stopped {
		return
	}
	c.fed = time.Now()
	gen := c.gen
	c.timer = time.AfterFunc(c.timeout, func() { c.expire(gen) })
}

func (c *countdown) expire(gen uint64) {
	c.mu.Lock()
	if gen != c.gen || !c.armed || c.stopped {
		c.mu.Unlock()
		return
	}
	c.armed = false
	c.timer = nil
	since := time.Since(c.fed)
	reason := fmt.Sprintf("not fed for %s (timeout %s)", since.Round(100*time.Millisecond), c.timeout)
	// Added under the lock that stop takes before it waits.
	c.fires.Add(1)
	c.mu.Unlock()
	defer c.fires.Done()
	c.log.Info("Watchdog expired", "reason", reason)
	c.fire(reason)
}

// Process is the client of a watchdog process (Serve): the Watchdog of a node under
// `ferry up`. It connects on first use and again after an error, since the watchdog
// process may have been restarted; every call gives up after a short deadline, so a
// stuck watchdog process cannot stall the agent that feeds it. Safe for concurrent use.
type Process struct {
	socket   string
	deadline time.Duration

	mu     sync.Mutex
	conn   net.Conn
	rd     *bufio.Reader
	closed bool
}

var _ Watchdog = (*Process)(nil)

// DialProcess returns the client of the watchdog process listening at socketPath. It
// does not connect yet.
func DialProcess(socketPath string) *Process {
	return &Process{socket: socketPath, deadline: time.Second}
}

// Arm starts the countdown or re-arms it with a new timeout (whole milliseconds, rounded
// up).
func (p *Process) Arm(timeout time.Duration) error {
	if err := checkTimeout(timeout); err != nil {
		return err
	}
	ms := (timeout + time.Millisecond - 1) / time.Millisecond
	return p.call("arm " + strconv.FormatInt(int64(ms), 10))
}

// Feed restarts the countdown; ErrNotArmed when none runs, which also follows an expiry
// or a restart of the watchdog process.
func (p *Process) Feed() error { return p.call("feed") }

// Disarm stops the countdown.
func (p *Process) Disarm() error { return p.call("disarm") }

// Close drops the connection; an armed countdown keeps running. Later calls fail.
func (p *Process) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return p.dropLocked()
}

func (p *Process) call(req string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("watchdog %s: %w", p.socket, net.ErrClosed)
	}
	deadline := time.Now().Add(p.deadline)
	reused := p.conn != nil
	reply, err := p.roundTripLocked(req, deadline)
	if err != nil && reused && time.Now().Before(deadline) {
		// The connection may predate a restart of the watchdog process: try a new one.
		// Every request is safe to repeat.
		reply, err = p.roundTripLocked(req, deadline)
	}
	switch {
	case err != nil:
		return fmt.Errorf("watchdog %s: %s: %w", p.socket, req, err)
	case reply == replyOK:
		return nil
	case reply == replyError+notArmedReason:
		return ErrNotArmed
	case strings.HasPrefix(reply, replyError):
		return fmt.Errorf("watchdog %s: %s: %s", p.socket, req, strings.TrimPrefix(reply, replyError))
	}
	p.dropLocked()
	return fmt.Errorf("watchdog %s: %s: unexpected reply %q", p.socket, req, reply)
}

func (p *Process) roundTripLocked(req string, deadline time.Time) (string, error) {
	if p.conn == nil {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.Dial("unix", p.socket)
		if err != nil {
			return "", err
		}
		p.conn, p.rd = conn, bufio.NewReader(conn)
	}
	if err := p.conn.SetDeadline(deadline); err != nil {
		p.dropLocked()
		return "", err
	}
	if _, err := p.conn.Write([]byte(req + "\n")); err != nil {
		p.dropLocked()
		return "", err
	}
	line, err := p.rd.ReadString('\n')
	if err != nil {
		p.dropLocked()
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

func (p *Process) dropLocked() error {
	if p.conn == nil {
		return nil
	}
	err := p.conn.Close()
	p.conn, p.rd = nil, nil
	return err
}
