package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Lines printed by the Ferry guest image (hack/build-guest-image.sh).
const (
	GuestBootedLine = "FERRY-GUEST BOOTED"
	guestCNTPrefix  = "CNT "
	guestIPPrefix   = "IP "
)

// SerialFollower tails a serial log and tracks the guest heartbeat.
type SerialFollower struct {
	path string

	mu      sync.Mutex
	off     int64
	partial []byte
	booted  bool
	n       int64
	at      time.Time
	ok      bool
	ip      string
}

// NewSerialFollower returns a follower for path (typically
// RunDir/serial.log). Call Poll to read new output, or Run to poll in the
// background.
func NewSerialFollower(path string) *SerialFollower {
	return &SerialFollower{path: path}
}

// FollowSerial starts a follower that polls path every interval until ctx
// ends.
func FollowSerial(ctx context.Context, path string, interval time.Duration) *SerialFollower {
	f := NewSerialFollower(path)
	go f.Run(ctx, interval)
	return f
}

// Run polls until ctx ends.
func (f *SerialFollower) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		f.Poll()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll reads whatever was appended since the last call. A missing file is
// not an error (QEMU creates it lazily); a file that shrank is re-read from
// the start.
func (f *SerialFollower) Poll() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	file, err := os.Open(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < f.off {
		f.off, f.partial = 0, nil
	}
	if fi.Size() == f.off {
		return nil
	}
	if _, err := file.Seek(f.off, io.SeekStart); err != nil {
		return err
	}
	buf, err := io.ReadAll(io.LimitReader(file, fi.Size()-f.off))
	if err != nil {
		return err
	}
	f.off += int64(len(buf))
	now := time.Now()
	data := append(f.partial, buf...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		f.line(bytes.TrimRight(data[:i], "\r"), now)
		data = data[i+1:]
	}
	if len(data) > 4096 { // runaway line without newline
		data = data[len(data)-4096:]
	}
	f.partial = append([]byte(nil), data...)
	return nil
}

func (f *SerialFollower) line(l []byte, now time.Time) {
	if bytes.Contains(l, []byte(GuestBootedLine)) {
		f.booted = true
	}
	if i := bytes.LastIndex(l, []byte(guestCNTPrefix)); i >= 0 {
		digits := l[i+len(guestCNTPrefix):]
		j := 0
		for j < len(digits) && digits[j] >= '0' && digits[j] <= '9' {
			j++
		}
		if n, err := strconv.ParseInt(string(digits[:j]), 10, 64); err == nil && j > 0 {
			f.n, f.at, f.ok = n, now, true
		}
	}
	if bytes.HasPrefix(l, []byte(guestIPPrefix)) {
		f.ip = string(bytes.TrimSpace(l[len(guestIPPrefix):]))
	}
}

// Heartbeat returns the last "CNT <n>" value and when the follower saw it.
// ok is false until one was seen.
func (f *SerialFollower) Heartbeat() (n int64, at time.Time, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.at, f.ok
}

// Booted reports whether "FERRY-GUEST BOOTED" appeared.
func (f *SerialFollower) Booted() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.booted
}

// IP returns the address from the last "IP <addr>" line, if any.
func (f *SerialFollower) IP() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ip
}

// Console attaches an interactive console to RunDir/serial.sock: it first
// writes the last lines of RunDir/serial.log to out, then copies in to the
// guest and guest output to out until ctx ends, in reaches EOF or the
// connection closes. QEMU serves one console client at a time.
func Console(ctx context.Context, runDir string, in io.Reader, out io.Writer) error {
	if tail, err := logTail(filepath.Join(runDir, SerialLogName), 4096, 25); err == nil && len(tail) > 0 {
		out.Write(tail)
		if tail[len(tail)-1] != '\n' {
			io.WriteString(out, "\n")
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", filepath.Join(runDir, SerialSocketName))
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	inErr := make(chan error, 1)
	outErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, in)
		inErr <- err
	}()
	go func() {
		_, err := io.Copy(out, conn)
		outErr <- err
	}()
	select {
	case err = <-inErr:
		// Input ended (e.g. a piped command). QEMU drops input still queued
		// when the client hangs up, so keep showing output for a moment.
		t := time.NewTimer(consoleLinger)
		select {
		case <-t.C:
		case <-outErr:
		case <-ctx.Done():
		}
		t.Stop()
	case err = <-outErr:
	}
	if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// consoleLinger is how long Console keeps the connection after its input
// ended.
const consoleLinger = 1500 * time.Millisecond

// logTail returns at most the last maxLines lines within the last maxBytes
// of path, normalized to "\n" line ends.
func logTail(path string, maxBytes int64, maxLines int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := fi.Size() - maxBytes
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil, err
	}
	buf = lfLineEnds(buf[:n])
	if off > 0 {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		}
	}
	lines := bytes.SplitAfter(buf, []byte("\n"))
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return bytes.Join(lines, nil), nil
}

// lfLineEnds drops the carriage returns before each line feed: a serial console ends lines
// with "\r\n", and with "\r\r\n" when the guest wrote "\r\n" through a tty that adds one.
func lfLineEnds(b []byte) []byte {
	out := make([]byte, 0, len(b))
	cr := 0 // carriage returns not yet written: dropped if a line feed follows
	for _, c := range b {
		switch c {
		case '\r':
			cr++
			continue
		case '\n':
		default:
			out = append(out, bytes.Repeat([]byte{'\r'}, cr)...)
		}
		cr = 0
		out = append(out, c)
	}
	return append(out, bytes.Repeat([]byte{'\r'}, cr)...)
}
