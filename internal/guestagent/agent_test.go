package guestagent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeAgent answers like qemu-ga on the guest's end of the channel: it reads one command
// per line (a leading 0xFF is dropped) and answers from replies; before its first answer
// it writes stale, noise and a delimited answer to another sync, as a channel that
// carried an earlier exchange would.
type fakeAgent struct {
	conn    net.Conn
	replies map[string]string // command → raw "return" JSON; absent: CommandNotFound
	silent  bool
	got     chan string
}

func startFake(t *testing.T, replies map[string]string, silent bool) (*Client, *fakeAgent) {
	t.Helper()
	host, guest := net.Pipe()
	f := &fakeAgent{conn: guest, replies: replies, silent: silent, got: make(chan string, 16)}
	go f.serve()
	t.Cleanup(func() { host.Close(); guest.Close() })
	return New(host), f
}

func (f *fakeAgent) serve() {
	r := bufio.NewReader(f.conn)
	first := true
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		line = bytes.TrimLeft(line, "\xff")
		var cmd struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if json.Unmarshal(line, &cmd) != nil {
			continue
		}
		select {
		case f.got <- cmd.Execute:
		default:
		}
		if f.silent {
			continue
		}
		var out string
		switch {
		case cmd.Execute == "guest-sync-delimited":
			var a struct {
				ID int64 `json:"id"`
			}
			json.Unmarshal(cmd.Arguments, &a)
			if first {
				// The tail of an earlier exchange, noise, and the answer to an older sync.
				out = "{\"return\": {}}\ngarbage \x00\x01\n\xff{\"return\": 17}\n"
				first = false
			}
			out += "\xff" + `{"return": ` + jsonInt(a.ID) + "}\n"
		case cmd.Execute == "guest-shutdown":
			continue // no reply, as qemu-ga
		default:
			if ret, ok := f.replies[cmd.Execute]; ok {
				var b bytes.Buffer
				json.Compact(&b, []byte(ret)) // qemu-ga answers on one line
				out = `{"return": ` + b.String() + "}\n"
			} else {
				out = `{"error": {"class": "CommandNotFound", "desc": "The command ` + cmd.Execute + ` has not been found"}}` + "\n"
			}
		}
		if _, err := f.conn.Write([]byte(out)); err != nil {
			return
		}
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestSyncSkipsWhatAnEarlierExchangeLeft(t *testing.T) {
	c, _ := startFake(t, nil, false)
	if err := c.Sync(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	// A second sync on the same connection works too (no leftovers in between).
	if err := c.Sync(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
}

func TestNoAgentIsNotAnError(t *testing.T) {
	c, _ := startFake(t, nil, true)
	err := c.Sync(ctxT(t, 300*time.Millisecond))
	if !errors.Is(err, ErrNoAgent) {
		t.Fatalf("Sync with a silent guest: %v, want ErrNoAgent", err)
	}
}

func TestQueryReadsTheGuest(t *testing.T) {
	c, _ := startFake(t, map[string]string{
		"guest-get-osinfo": `{"id":"debian","name":"Debian GNU/Linux","pretty-name":"Debian GNU/Linux 12 (bookworm)",
			"version":"12 (bookworm)","version-id":"12","kernel-release":"6.1.0-28-cloud-amd64",
			"kernel-version":"#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1","machine":"x86_64"}`,
		"guest-get-host-name": `{"host-name":"linux-vm"}`,
		"guest-network-get-interfaces": `[{"name":"lo","hardware-address":"00:00:00:00:00:00","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"127.0.0.1","prefix":8}]},
			{"name":"ens4","hardware-address":"02:66:0a:42:0a:05","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"10.66.10.5","prefix":24},
			{"ip-address-type":"ipv6","ip-address":"fe80::66:aff:fe42:a05","prefix":64}]}]`,
	}, false)
	ctx := ctxT(t, 5*time.Second)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := c.Query(ctx)
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	if info.OS == nil || info.OS.ID != "debian" || info.OS.VersionID != "12" || info.OS.PrettyName != "Debian GNU/Linux 12 (bookworm)" || info.OS.KernelRelease != "6.1.0-28-cloud-amd64" {
		t.Errorf("OS = %+v", info.OS)
	}
	if info.Hostname != "linux-vm" {
		t.Errorf("Hostname = %q", info.Hostname)
	}
	if len(info.Interfaces) != 1 || info.Interfaces[0].Name != "ens4" || strings.Join(info.Interfaces[0].IPAddresses, ",") != "10.66.10.5" {
		t.Errorf("Interfaces = %+v (want ens4 with 10.66.10.5 only: no loopback, no link-local)", info.Interfaces)
	}
}

// An agent without some commands (old, or trimmed by a blocklist) still gives the rest.
func TestQueryWithMissingCommands(t *testing.T) {
	c, _ := startFake(t, map[string]string{"guest-get-host-name": `{"host-name":"w2k"}`}, false)
	ctx := ctxT(t, 5*time.Second)
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := c.Query(ctx)
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	if info.OS != nil || info.Hostname != "w2k" || len(info.Interfaces) != 0 {
		t.Errorf("info = %+v", info)
	}
}

func TestShutdownSendsTheCommand(t *testing.T) {
	c, f := startFake(t, nil, false)
	if err := c.Shutdown(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-f.got:
		if got != "guest-shutdown" {
			t.Errorf("agent got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the agent got nothing")
	}
}

// What a guest writes on the channel is the tenant's: long, broken or hostile answers end in
// an error or are skipped, never in a panic or unbounded memory.
func TestHostileAnswersAreBounded(t *testing.T) {
	long := strings.Repeat("x", 2*maxReply)
	for _, in := range []string{
		"{\"return\": \"" + long + "\"}\n",
		long + "\n",
		"\xff\xff\xff{]\n{\"return\": 1}\n",
	} {
		_, err := readReply(bufio.NewReader(strings.NewReader(in)))
		if err == nil && len(in) > maxReply {
			t.Errorf("a %d-byte reply was accepted", len(in))
		}
	}
	if got := clip(strings.Repeat("é", 300)); len(got) > maxField {
		t.Errorf("clip left %d bytes", len(got))
	}
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"{\"return\": 5}\n", "\xff{\"return\": 5}\n", "{\"error\": {\"class\": \"GenericError\", \"desc\": \"x\"}}\n",
		"garbage\n", "", "{\"return\": {\"host-name\": \"a\"}}", "\xff\xff\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for i := 0; i < 8; i++ {
			if skipToMarker(r) != nil {
				break
			}
			rep, err := readReply(r)
			if err == nil && rep.Return == nil && rep.Error == nil {
				// A JSON object without either: allowed, it is skipped by callers.
				continue
			}
		}
		if s := clip(string(data)); len(s) > maxField {
			t.Fatalf("clip: %d bytes", len(s))
		}
	})
}
