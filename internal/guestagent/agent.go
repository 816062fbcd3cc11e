package guestagent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// maxReply bounds one reply from the guest: the guest is the tenant's, and what it writes is
// read by a process on the node.
const maxReply = 256 << 10

// ErrNoAgent is returned when nothing in the guest answered the sync in time.
var ErrNoAgent = errors.New("guest agent: no answer")

// Error is an error reply of the agent.
type Error struct {
	Command, Class, Desc string
}

func (e *Error) Error() string {
	return fmt.Sprintf("guest agent %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Client is one connection to a guest agent. Its methods are serialized.
type Client struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
}

// Dial connects to the agent channel's unix socket.
func Dial(ctx context.Context, socket string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("guest agent: dial %s: %w", socket, err)
	}
	return New(c), nil
}

// New takes over an established connection to the agent channel.
func New(conn net.Conn) *Client {
	return &Client{conn: conn, r: bufio.NewReaderSize(conn, 4096)}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Sync makes the channel usable: it sends guest-sync-delimited with a new random id and
// drops everything the guest sent until the agent's 0xFF marker and that id. It returns
// ErrNoAgent when the agent did not answer before ctx's deadline.
func (c *Client) Sync(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b [8]byte
	rand.Read(b[:])
	id := int64(binary.LittleEndian.Uint64(b[:]) >> 12) // fits a JSON number exactly
	cmd, _ := json.Marshal(map[string]any{"execute": "guest-sync-delimited", "arguments": map[string]int64{"id": id}})
	// A leading 0xFF makes an agent that was in the middle of parsing something drop it.
	if err := c.write(ctx, append([]byte{0xFF}, cmd...)); err != nil {
		return err
	}
	stop := c.deadline(ctx)
	defer stop()
	for {
		if err := skipToMarker(c.r); err != nil {
			return c.readErr(ctx, err)
		}
		rep, err := readReply(c.r)
		if err != nil {
			if errors.Is(err, errNotJSON) {
				continue
			}
			return c.readErr(ctx, err)
		}
		var got int64
		if rep.Error == nil && json.Unmarshal(rep.Return, &got) == nil && got == id {
			return nil
		}
	}
}

// Execute runs an agent command and decodes its "return" into out (nil: ignore it). Call
// Sync first on a new connection and after any error.
func (c *Client) Execute(ctx context.Context, command string, args, out any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	cmd, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := c.write(ctx, cmd); err != nil {
		return err
	}
	stop := c.deadline(ctx)
	defer stop()
	for {
		rep, err := readReply(c.r)
		if errors.Is(err, errNotJSON) {
			continue
		}
		if err != nil {
			return c.readErr(ctx, err)
		}
		if rep.Error != nil {
			return &Error{Command: command, Class: rep.Error.Class, Desc: rep.Error.Desc}
		}
		if out == nil || rep.Return == nil {
			return nil
		}
		if err := json.Unmarshal(rep.Return, out); err != nil {
			return fmt.Errorf("guest agent %s: %w", command, err)
		}
		return nil
	}
}

// Shutdown asks the guest to power off (guest-shutdown, mode powerdown). The agent sends no
// reply when the command succeeds, so none is awaited.
func (c *Client) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd, _ := json.Marshal(map[string]any{"execute": "guest-shutdown", "arguments": map[string]string{"mode": "powerdown"}})
	return c.write(ctx, cmd)
}

func (c *Client) write(ctx context.Context, b []byte) error {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
		defer c.conn.SetWriteDeadline(time.Time{})
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("guest agent: write: %w", err)
	}
	return nil
}

// deadline makes reads end when ctx does.
func (c *Client) deadline(ctx context.Context) (stop func()) {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetReadDeadline(dl)
	}
	cancel := context.AfterFunc(ctx, func() { c.conn.SetReadDeadline(time.Unix(1, 0)) })
	return func() {
		cancel()
		c.conn.SetReadDeadline(time.Time{})
	}
}

func (c *Client) readErr(ctx context.Context, err error) error {
	var ne net.Error
	if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
		return ErrNoAgent
	}
	return fmt.Errorf("guest agent: read: %w", err)
}

// reply is one message of the agent.
type reply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

var errNotJSON = errors.New("not a JSON object")

// skipToMarker drops bytes up to and including the next 0xFF.
func skipToMarker(r *bufio.Reader) error {
	n := 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return err
		}
		if b == 0xFF {
			return nil
		}
		if n++; n > maxReply {
			return errors.New("no sync marker in the guest's output")
		}
	}
}

// readReply reads one line (at most maxReply bytes) and decodes it as a reply. A line that is
// not a JSON object (noise, the tail of an earlier exchange) is errNotJSON.
func readReply(r *bufio.Reader) (reply, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxReply {
			return reply{}, errors.New("reply too long")
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return reply{}, err
		}
	}
	line = bytes.TrimSpace(bytes.TrimLeft(line, "\xff"))
	var rep reply
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &rep) != nil {
		return reply{}, errNotJSON
	}
	return rep, nil
}

// Info is what the agent tells about the guest.
type Info struct {
	OS         *OSInfo
	Hostname   string
	Interfaces []Interface
}

// OSInfo is the guest's operating system, as v1alpha2.GuestOSInfo (same fields and JSON),
// kept here so that launchers link no API types.
type OSInfo struct {
	ID            string `json:"id,omitempty"`
	Name          string `json:"name,omitempty"`
	PrettyName    string `json:"prettyName,omitempty"`
	Version       string `json:"version,omitempty"`
	VersionID     string `json:"versionId,omitempty"`
	KernelRelease string `json:"kernelRelease,omitempty"`
	KernelVersion string `json:"kernelVersion,omitempty"`
	Machine       string `json:"machine,omitempty"`
}

// Interface is a guest network interface, as v1alpha2.GuestInterface (same fields and JSON).
type Interface struct {
	Name        string   `json:"name"`
	MAC         string   `json:"mac,omitempty"`
	IPAddresses []string `json:"ipAddresses,omitempty"`
}

// Query asks the agent for the guest's OS, host name and network interfaces. Commands the
// agent lacks (older or trimmed agents) leave their part empty.
func (c *Client) Query(ctx context.Context) (Info, error) {
	var info Info
	var osInfo struct {
		ID            string `json:"id"`
		Name          string `json:"name"`
		PrettyName    string `json:"pretty-name"`
		Version       string `json:"version"`
		VersionID     string `json:"version-id"`
		KernelRelease string `json:"kernel-release"`
		KernelVersion string `json:"kernel-version"`
		Machine       string `json:"machine"`
	}
	if err := c.Execute(ctx, "guest-get-osinfo", nil, &osInfo); err != nil && !isCommandError(err) {
		return info, err
	} else if err == nil {
		info.OS = &OSInfo{
			ID: clip(osInfo.ID), Name: clip(osInfo.Name), PrettyName: clip(osInfo.PrettyName),
			Version: clip(osInfo.Version), VersionID: clip(osInfo.VersionID),
			KernelRelease: clip(osInfo.KernelRelease), KernelVersion: clip(osInfo.KernelVersion), Machine: clip(osInfo.Machine),
		}
	}
	var host struct {
		HostName string `json:"host-name"`
	}
	if err := c.Execute(ctx, "guest-get-host-name", nil, &host); err != nil && !isCommandError(err) {
		return info, err
	}
	info.Hostname = clip(host.HostName)
	var ifaces []struct {
		Name        string `json:"name"`
		MAC         string `json:"hardware-address"`
		IPAddresses []struct {
			Type    string `json:"ip-address-type"`
			Address string `json:"ip-address"`
			Prefix  int    `json:"prefix"`
		} `json:"ip-addresses"`
	}
	if err := c.Execute(ctx, "guest-network-get-interfaces", nil, &ifaces); err != nil && !isCommandError(err) {
		return info, err
	}
	for _, i := range ifaces {
		if i.Name == "lo" || len(info.Interfaces) == maxInterfaces {
			continue
		}
		gi := Interface{Name: clip(i.Name), MAC: clip(i.MAC)}
		for _, a := range i.IPAddresses {
			if ip := net.ParseIP(a.Address); ip != nil && !ip.IsLinkLocalUnicast() && len(gi.IPAddresses) < maxAddresses {
				gi.IPAddresses = append(gi.IPAddresses, ip.String())
			}
		}
		info.Interfaces = append(info.Interfaces, gi)
	}
	return info, nil
}

// Bounds on what a guest's answers may put into Ferry's objects.
const (
	maxField      = 256
	maxInterfaces = 8
	maxAddresses  = 8
)

// clip bounds a string the guest chose, and keeps it valid text.
func clip(s string) string {
	s = string(bytes.ToValidUTF8([]byte(s), []byte("?")))
	if len(s) > maxField {
		s = string(bytes.ToValidUTF8([]byte(s[:maxField]), nil))
	}
	return s
}

func isCommandError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

var _ io.Closer = (*Client)(nil)
