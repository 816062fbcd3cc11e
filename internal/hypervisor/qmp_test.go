package hypervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeQMPServer speaks enough QMP for the client tests. Commands:
// query-status (two events, then a reply), fail (error reply), noid
// (error reply without id), hang (no reply), bye (closes the connection),
// anything else returns {}.
func fakeQMPServer(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveFakeQMP(conn)
		}
	}()
	return sock
}

func serveFakeQMP(conn net.Conn) {
	defer conn.Close()
	var wmu sync.Mutex
	send := func(v any) {
		b, _ := json.Marshal(v)
		wmu.Lock()
		conn.Write(append(b, '\r', '\n'))
		wmu.Unlock()
	}
	event := func(name string, data any) {
		send(map[string]any{"event": name, "data": data,
			"timestamp": map[string]int64{"seconds": 1700000000, "microseconds": 5}})
	}
	send(map[string]any{"QMP": map[string]any{"version": map[string]any{"qemu": map[string]int{"major": 7}}, "capabilities": []string{}}})
	sc := bufio.NewScanner(conn)
	negotiated := false
	for sc.Scan() {
		var cmd struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
			ID        any             `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			send(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "JSON parse error"}})
			continue
		}
		if !negotiated && cmd.Execute != "qmp_capabilities" {
			send(map[string]any{"error": map[string]string{"class": "CommandNotFound", "desc": "capabilities negotiation first"}, "id": cmd.ID})
			continue
		}
		switch cmd.Execute {
		case "qmp_capabilities":
			negotiated = true
			send(map[string]any{"return": map[string]any{}, "id": cmd.ID})
		case "query-status":
			event("RESUME", nil)
			event("SHUTDOWN", map[string]any{"guest": true, "reason": "guest-shutdown"})
			send(map[string]any{"return": map[string]any{"status": "running", "running": true}, "id": cmd.ID})
		case "fail":
			send(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "it broke"}, "id": cmd.ID})
		case "noid":
			send(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "no id here"}})
		case "echo":
			send(map[string]any{"return": cmd.Arguments, "id": cmd.ID})
		case "hang":
		case "bye":
			return
		default:
			send(map[string]any{"return": map[string]any{}, "id": cmd.ID})
		}
	}
}

func TestQMPClient(t *testing.T) {
	sock := fakeQMPServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	events := make(chan Event, 16)
	c, err := DialQMP(ctx, sock, func(ev Event) { events <- ev })
	if err != nil {
		t.Fatalf("DialQMP: %v", err)
	}
	defer c.Close()
	if len(c.Greeting()) == 0 {
		t.Error("no greeting recorded")
	}

	// Reply arrives after two events: they are skipped for the reply and
	// delivered to the handler.
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatalf("query-status: %v", err)
	}
	if st.Status != "running" || !st.Running {
		t.Errorf("status = %+v", st)
	}
	for _, want := range []string{"RESUME", "SHUTDOWN"} {
		select {
		case ev := <-events:
			if ev.Name != want {
				t.Errorf("event %q, want %q", ev.Name, want)
			}
			if ev.Timestamp.Unix() != 1700000000 {
				t.Errorf("event timestamp %v", ev.Timestamp)
			}
			if want == "SHUTDOWN" {
				var d struct{ Guest bool }
				json.Unmarshal(ev.Data, &d)
				if !d.Guest {
					t.Errorf("SHUTDOWN data %s", ev.Data)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %s not delivered", want)
		}
	}

	// Error replies become *QMPError with class and desc.
	err = c.Execute(ctx, "fail", nil, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "GenericError" || qe.Desc != "it broke" || qe.Command != "fail" {
		t.Fatalf("fail: got %v", err)
	}
	err = c.Execute(ctx, "noid", nil, nil)
	if !errors.As(err, &qe) || qe.Desc != "no id here" {
		t.Fatalf("noid: got %v", err)
	}

	// Arguments are marshalled; concurrent calls are serialized and each
	// gets its own reply.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out struct{ N int }
			if err := c.Execute(ctx, "echo", map[string]int{"N": i}, &out); err != nil {
				t.Errorf("echo %d: %v", i, err)
			} else if out.N != i {
				t.Errorf("echo %d returned %d", i, out.N)
			}
		}()
	}
	wg.Wait()

	// A command without reply honours ctx; the client stays usable.
	hctx, hcancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = c.Execute(hctx, "hang", nil, nil)
	hcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: got %v", err)
	}
	if err := c.Execute(ctx, "anything", nil, nil); err != nil {
		t.Fatalf("after hang: %v", err)
	}

	// The server going away fails the pending call and later ones.
	err = c.Execute(ctx, "bye", nil, nil)
	if !errors.Is(err, ErrQMPClosed) {
		t.Fatalf("bye: got %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if err := c.Execute(ctx, "anything", nil, nil); !errors.Is(err, ErrQMPClosed) {
		t.Fatalf("after close: got %v", err)
	}
}

func TestQMPDialErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := DialQMP(ctx, filepath.Join(t.TempDir(), "missing.sock"), nil); err == nil {
		t.Fatal("dial of a missing socket succeeded")
	}

	// A server that never greets: the handshake honours ctx.
	sock := filepath.Join(t.TempDir(), "mute.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(3 * time.Second)
		}
	}()
	sctx, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer scancel()
	if _, err := DialQMP(sctx, sock, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("mute server: got %v", err)
	}
}
