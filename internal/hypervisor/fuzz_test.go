package hypervisor

// Fuzz targets for what reaches the hypervisor package from QEMU and from the guest: QMP
// replies and events (QEMU is trusted, but guest-chosen strings pass through them), and
// the guest's serial console, which the tenant writes.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzQMPClient runs the client against a server that sends an arbitrary greeting and,
// after the capabilities handshake, arbitrary lines as the reply to a command ("$ID" in
// them stands for the command's id), then hangs up. The client must neither panic nor
// hang, and Execute must end with the reply, a QMP error, a decode error or ErrQMPClosed.
func FuzzQMPClient(f *testing.F) {
	greeting := `{"QMP":{"version":{"qemu":{"major":7,"minor":2,"micro":0}},"capabilities":["oob"]}}`
	f.Add(greeting, `{"return":{"status":"running","running":true},"id":"$ID"}`)
	f.Add(greeting, `{"error":{"class":"GenericError","desc":"it broke"},"id":"$ID"}`)
	f.Add(greeting, `{"error":{"class":"GenericError","desc":"JSON parse error"}}`)
	f.Add(greeting, `{"event":"GUEST_PANICKED","data":{"action":"pause","info":{"type":"hyper-v"}},"timestamp":{"seconds":1700000000,"microseconds":5}}`+"\r\n"+`{"return":{"status":"paused","running":false},"id":"$ID"}`)
	f.Add(greeting, `{"event":"BLOCK_IO_ERROR","data":{"device":"","node-name":"disk0","operation":"write","action":"stop","nospace":true}}`)
	f.Add(greeting, `{"return":{"status":7},"id":"$ID"}`)
	f.Add(greeting, `{"return":[],"id":"other"}`+"\n"+`{"return":{},"id":5}`+"\n"+`not json`)
	f.Add(greeting, `{"event":"SHUTDOWN","timestamp":{"seconds":-9223372036854775808,"microseconds":9223372036854775807}}`)
	f.Add(`{"QMP":null}`, ``)
	f.Add(`not a greeting`, ``)
	f.Add(``, ``)
	f.Fuzz(func(t *testing.T, greeting, reply string) {
		if strings.Contains(greeting, "\n") {
			return // the greeting is one line
		}
		client, server := net.Pipe()
		defer client.Close()
		go serveFuzzQMP(server, greeting, reply)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		events := 0
		c, err := NewQMPClient(ctx, client, func(ev Event) {
			events++
			if f := faultOf(ev); f != nil && (f.Reason == "" || f.Message == "") {
				t.Errorf("event %s %s read as a fault without a reason or message: %+v", ev.Name, ev.Data, f)
			}
		})
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("the handshake hung: %v", err)
			}
			return
		}
		var out struct {
			Status  string `json:"status"`
			Running bool   `json:"running"`
		}
		err = c.Execute(ctx, "query-status", nil, &out)
		var qerr *QMPError
		switch {
		case ctx.Err() != nil:
			t.Fatalf("Execute hung on reply %q: %v", reply, err)
		case err == nil, errors.Is(err, ErrQMPClosed), errors.As(err, &qerr):
		case strings.Contains(err.Error(), "decode reply"):
		default:
			t.Fatalf("Execute on reply %q: unexpected error %v", reply, err)
		}
		if qerr != nil && qerr.Command != "query-status" {
			t.Fatalf("QMP error for command %q, want query-status", qerr.Command)
		}
		c.Close()
		if events > strings.Count(reply, "\n")+1 {
			t.Fatalf("%d events from %d lines", events, strings.Count(reply, "\n")+1)
		}
	})
}

// serveFuzzQMP plays QEMU: the greeting, a correct answer to qmp_capabilities, then reply
// (with the command's id for "$ID") to the next command, and it hangs up.
func serveFuzzQMP(conn net.Conn, greeting, reply string) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(greeting + "\r\n")); err != nil {
		return
	}
	r := bufio.NewReader(conn)
	var cmd struct {
		ID json.RawMessage `json:"id"`
	}
	line, err := r.ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &cmd) != nil {
		return
	}
	if _, err := conn.Write(append(append([]byte(`{"return":{},"id":`), cmd.ID...), "}\r\n"...)); err != nil {
		return
	}
	if line, err = r.ReadBytes('\n'); err != nil || json.Unmarshal(line, &cmd) != nil {
		return
	}
	conn.Write([]byte(strings.ReplaceAll(reply, `"$ID"`, string(cmd.ID)) + "\n"))
}

// FuzzFaultOf reads arbitrary events as faults: only GUEST_PANICKED, and BLOCK_IO_ERROR
// with the action "stop", are faults, and a fault always has a reason, a message and a time.
func FuzzFaultOf(f *testing.F) {
	f.Add("GUEST_PANICKED", []byte(`{"action":"pause","info":{"type":"hyper-v","arg1":1}}`))
	f.Add("GUEST_PANICKED", []byte(`null`))
	f.Add("BLOCK_IO_ERROR", []byte(`{"device":"","node-name":"disk0","operation":"write","action":"stop","nospace":false,"reason":"Input/output error"}`))
	f.Add("BLOCK_IO_ERROR", []byte(`{"device":"virtio0","operation":"read","action":"report"}`))
	f.Add("BLOCK_IO_ERROR", []byte(`{"action":"stop","nospace":"yes"}`))
	f.Add("SHUTDOWN", []byte(`{"guest":true,"reason":"guest-shutdown"}`))
	f.Add("RESUME", []byte(``))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		got := faultOf(Event{Name: name, Data: data})
		var d struct {
			Action string `json:"action"`
		}
		json.Unmarshal(data, &d)
		want := name == "GUEST_PANICKED" || name == "BLOCK_IO_ERROR" && d.Action == "stop"
		if (got != nil) != want {
			t.Fatalf("faultOf(%s %q) = %+v", name, data, got)
		}
		if got != nil && (got.Reason == "" || got.Message == "" || got.At.IsZero()) {
			t.Fatalf("faultOf(%s %q) = %+v: a fault needs a reason, a message and a time", name, data, got)
		}
	})
}

// FuzzSerialFollower writes arbitrary guest output to a serial log in two parts, polling
// after each: the follower must read the same as from one write when no line is longer
// than it keeps of an unfinished one, and what it reads must follow from the lines.
func FuzzSerialFollower(f *testing.F) {
	f.Add([]byte("Linux version 6.1\r\nFERRY-GUEST BOOTED\r\nIP 10.66.10.5\r\nCNT 1\r\nCNT 2\r\n"), 20)
	f.Add([]byte("CNT 12\nCNT 99999999999999999999999\nCNT x\n"), 4)
	f.Add([]byte("login: CNT 7 CNT 8\nIP   \n"), 100)
	f.Add([]byte("CNT -1\nCNT 5"), 0)
	f.Add(bytes.Repeat([]byte("A"), 5000), 2500)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		if split < 0 || split > len(data) {
			split = len(data) / 2
		}
		path := filepath.Join(dir, "serial.log")
		if err := os.WriteFile(path, data[:split], 0o644); err != nil {
			t.Fatal(err)
		}
		s := NewSerialFollower(path)
		if err := s.Poll(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.Poll(); err != nil {
			t.Fatal(err)
		}
		n, _, ok := s.Heartbeat()
		if ok && n < 0 {
			t.Fatalf("heartbeat %d from %q", n, data)
		}

		lines := strings.Split(string(data), "\n")
		lines = lines[:len(lines)-1] // an unfinished line is not read yet
		for _, l := range lines {
			if len(l) > 4096 {
				return // a runaway line is cut: what is read of it depends on the polls
			}
		}
		var want struct {
			booted, ok bool
			n          int64
			ip         string
		}
		for _, l := range lines {
			l = strings.TrimRight(l, "\r")
			want.booted = want.booted || strings.Contains(l, GuestBootedLine)
			if i := strings.LastIndex(l, "CNT "); i >= 0 {
				digits := l[i+4:]
				if j := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); j >= 0 {
					digits = digits[:j]
				}
				if v, err := strconv.ParseInt(digits, 10, 64); err == nil {
					want.n, want.ok = v, true
				}
			}
			if ip, found := strings.CutPrefix(l, "IP "); found {
				want.ip = strings.TrimSpace(ip)
			}
		}
		if s.Booted() != want.booted || ok != want.ok || n != want.n || s.IP() != want.ip {
			t.Fatalf("from %q (split at %d): booted %v, heartbeat %d (%v), IP %q; want %v, %d (%v), %q",
				data, split, s.Booted(), n, ok, s.IP(), want.booted, want.n, want.ok, want.ip)
		}
	})
}

// crlf is a line end that is not a bare "\n".
var crlf = regexp.MustCompile(`\r+\n`)

// FuzzLogTail checks the tail of the serial log shown before a console attaches: at most
// the lines and bytes asked for, "\r\n" made "\n", and a suffix of the log.
func FuzzLogTail(f *testing.F) {
	f.Add([]byte("one\r\ntwo\r\nthree\r\n"), int64(4096), 25)
	f.Add([]byte("a\nb\nc\nd"), int64(3), 2)
	f.Add([]byte("\r\r\n\n\r"), int64(2), 1)
	f.Add([]byte{}, int64(0), 0)
	f.Add([]byte("\r\r\n"), int64(76), 11) // found by this target: a "\r\n" was left
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, maxBytes int64, maxLines int) {
		if maxBytes < 0 || maxBytes > 1<<20 || maxLines < 0 {
			return
		}
		path := filepath.Join(dir, "serial.log")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := logTail(path, maxBytes, maxLines)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) > maxBytes || bytes.Count(got, []byte("\n")) > maxLines || crlf.Match(got) {
			t.Fatalf("logTail(%q, %d, %d) = %q", data, maxBytes, maxLines, got)
		}
		if norm := crlf.ReplaceAll(data, []byte("\n")); !bytes.HasSuffix(norm, got) {
			t.Fatalf("logTail(%q, %d, %d) = %q, not an end of the log", data, maxBytes, maxLines, got)
		}
	})
}

// TestLogTailLineEnds: a serial console's "\r\r\n" line ends (a tty adding "\r" to the
// guest's "\r\n") are shown as "\n", as "\r\n" ones are; a lone "\r" stays.
func TestLogTailLineEnds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(path, []byte("login:\r\r\nprogress\r50%\r\nend\r"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := logTail(path, 4096, 25)
	if want := "login:\nprogress\r50%\nend\r"; err != nil || string(got) != want {
		t.Errorf("logTail = %q, %v; want %q", got, err, want)
	}
}

// What QEMU prints and answers about CPUs is input from a process: the parsers never
// panic, and whatever they return is one word of -cpu each.
func FuzzCPUProbeParsers(f *testing.F) {
	f.Add("Recognized CPUID flags:\n  sse2 sse4.2\n", `{"model":{"props":{"sse2":true}}}`, `[{"name":"qemu64","unavailable-features":[]}]`)
	f.Add("warning: TCG doesn't support requested feature: CPUID.01H:ECX.vmx [bit 5]", `{}`, `[]`)
	f.Fuzz(func(t *testing.T, text, expansion, definitions string) {
		flags := ParseCPUFlags(text)
		got, _ := EnabledFlags(json.RawMessage(expansion), flags)
		models, _ := RunnableModels(json.RawMessage(definitions))
		refused := RefusedFeatures(text)
		for _, list := range [][]string{flags, got, models, refused} {
			for _, n := range list {
				if !cpuName.MatchString(n) {
					t.Fatalf("%q is not a -cpu word", n)
				}
			}
		}
		for _, g := range got {
			if !slices.Contains(flags, g) {
				t.Fatalf("%q is not among the flags %v", g, flags)
			}
		}
	})
}
