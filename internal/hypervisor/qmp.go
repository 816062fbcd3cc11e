package hypervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrQMPClosed is returned by Execute when the QMP connection is gone
// (QEMU exited or Close was called).
var ErrQMPClosed = errors.New("qmp: connection closed")

// QMPError is an error reply from QEMU ({"error": {"class":..., "desc":...}}).
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Event is an asynchronous QMP event such as SHUTDOWN, RESET, STOP, RESUME
// or MIGRATION.
type Event struct {
	Name      string
	Data      json.RawMessage
	Timestamp time.Time
}

// QMPClient is a minimal QEMU Machine Protocol client. Execute calls are
// serialized; events are delivered to handlers from the reader goroutine.
type QMPClient struct {
	conn net.Conn

	execMu sync.Mutex // serializes Execute

	mu       sync.Mutex
	nextID   uint64
	pending  map[string]chan qmpMessage
	handlers map[int]func(Event)
	nextH    int
	closeErr error

	done    chan struct{}
	version json.RawMessage
}

type qmpMessage struct {
	QMP       json.RawMessage `json:"QMP,omitempty"`
	Return    json.RawMessage `json:"return,omitempty"`
	Error     *qmpErrorBody   `json:"error,omitempty"`
	Event     string          `json:"event,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	ID        json.RawMessage `json:"id,omitempty"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp,omitempty"`
}

type qmpErrorBody struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

type qmpCommand struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id"`
}

// DialQMP connects to a QMP unix socket, reads the greeting and negotiates
// capabilities. onEvent, if non-nil, is registered as an event handler
// before any event can be missed. ctx bounds the handshake only.
func DialQMP(ctx context.Context, path string, onEvent func(Event)) (*QMPClient, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", path, err)
	}
	return NewQMPClient(ctx, conn, onEvent)
}

// NewQMPClient runs the QMP handshake over an established connection and
// takes ownership of conn.
func NewQMPClient(ctx context.Context, conn net.Conn, onEvent func(Event)) (*QMPClient, error) {
	c := &QMPClient{
		conn:     conn,
		pending:  make(map[string]chan qmpMessage),
		handlers: make(map[int]func(Event)),
		done:     make(chan struct{}),
	}
	if onEvent != nil {
		c.AddEventHandler(onEvent)
	}
	r := bufio.NewReaderSize(conn, 64*1024)

	// Read the greeting synchronously, honouring ctx.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	line, err := r.ReadBytes('\n')
	interrupted := !stop()
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		if interrupted {
			return nil, fmt.Errorf("qmp: greeting: %w", ctx.Err())
		}
		return nil, fmt.Errorf("qmp: greeting: %w", err)
	}
	var greet qmpMessage
	if err := json.Unmarshal(line, &greet); err != nil || greet.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: unexpected greeting %q", truncate(string(line), 200))
	}
	c.version = greet.QMP

	go c.readLoop(r)
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Greeting returns the raw "QMP" object of the server greeting (version and
// capabilities).
func (c *QMPClient) Greeting() json.RawMessage { return c.version }

// AddEventHandler registers fn for every subsequent event and returns a
// function that unregisters it. Handlers run on the reader goroutine and
// must not block or call Execute synchronously.
func (c *QMPClient) AddEventHandler(fn func(Event)) (remove func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.nextH
	c.nextH++
	c.handlers[id] = fn
	return func() {
		c.mu.Lock()
		delete(c.handlers, id)
		c.mu.Unlock()
	}
}

// Done is closed when the connection has ended.
func (c *QMPClient) Done() <-chan struct{} { return c.done }

// Close closes the connection. Pending Execute calls fail with ErrQMPClosed.
func (c *QMPClient) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

// Execute runs cmd with args (marshalled to the "arguments" object, nil for
// none) and unmarshals the "return" value into out (if non-nil). A QMP
// error reply is returned as *QMPError. Calls are serialized. If ctx ends
// first, ctx.Err() is returned and the late reply is discarded.
func (c *QMPClient) Execute(ctx context.Context, cmd string, args any, out any) error {
	c.execMu.Lock()
	defer c.execMu.Unlock()

	c.mu.Lock()
	if c.closeErr != nil {
		c.mu.Unlock()
		return ErrQMPClosed
	}
	c.nextID++
	id := fmt.Sprintf("ferry-%d", c.nextID)
	ch := make(chan qmpMessage, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	b, err := json.Marshal(qmpCommand{Execute: cmd, Arguments: args, ID: id})
	if err != nil {
		return fmt.Errorf("qmp %s: marshal arguments: %w", cmd, err)
	}
	b = append(b, '\n')
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	_, err = c.conn.Write(b)
	c.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("qmp %s: write: %w", cmd, err)
	}

	select {
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	case <-c.done:
		// The reply may have been queued right before the connection ended.
		select {
		case m := <-ch:
			return decodeReply(cmd, m, out)
		default:
		}
		return fmt.Errorf("qmp %s: %w", cmd, ErrQMPClosed)
	case m := <-ch:
		return decodeReply(cmd, m, out)
	}
}

func decodeReply(cmd string, m qmpMessage, out any) error {
	if m.Error != nil {
		return &QMPError{Command: cmd, Class: m.Error.Class, Desc: m.Error.Desc}
	}
	if out == nil || m.Return == nil {
		return nil
	}
	if err := json.Unmarshal(m.Return, out); err != nil {
		return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
	}
	return nil
}

func (c *QMPClient) readLoop(r *bufio.Reader) {
	var err error
	for {
		var line []byte
		line, err = r.ReadBytes('\n')
		if len(line) > 0 {
			c.dispatch(line)
		}
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	c.conn.Close()
	close(c.done)
}

func (c *QMPClient) dispatch(line []byte) {
	var m qmpMessage
	if err := json.Unmarshal(line, &m); err != nil {
		return // not JSON; ignore
	}
	if m.Event != "" {
		ev := Event{Name: m.Event, Data: m.Data}
		if m.Timestamp != nil {
			ev.Timestamp = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
		}
		c.mu.Lock()
		hs := make([]func(Event), 0, len(c.handlers))
		for _, h := range c.handlers {
			hs = append(hs, h)
		}
		c.mu.Unlock()
		for _, h := range hs {
			h(ev)
		}
		return
	}
	var id string
	if m.ID != nil {
		if err := json.Unmarshal(m.ID, &id); err != nil {
			return
		}
	}
	c.mu.Lock()
	ch := c.pending[id]
	if ch == nil && id == "" && len(c.pending) == 1 {
		// Replies to unparsable commands carry no id; Execute is
		// serialized, so the only pending call is the one to fail.
		for _, p := range c.pending {
			ch = p
		}
	}
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default:
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
