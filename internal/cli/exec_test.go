package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/remotecommand"
)

// loopExecutor plays a kubelet's exec of `ferry v connect 127.0.0.1 PORT`: what the
// apiserver would carry as stdin/stdout streams it joins to a local TCP port. It tests
// the stream adapter alone; exec_kubelet_test.go runs the wire protocols.
type loopExecutor struct {
	port   int
	fail   error
	stderr string
}

func (e loopExecutor) Stream(o remotecommand.StreamOptions) error {
	return e.StreamWithContext(context.Background(), o)
}

func (e loopExecutor) StreamWithContext(ctx context.Context, o remotecommand.StreamOptions) error {
	if e.fail != nil {
		io.WriteString(o.Stderr, e.stderr)
		return e.fail
	}
	s, err := directTransport{timeout: time.Second}.Dial(ctx, Endpoint{Address: "127.0.0.1"}, e.port)
	if err != nil {
		return err
	}
	return bridgeStdio(s, o.Stdin, o.Stdout)
}

func TestExecStreamCarriesBothWaysAndHalfCloses(t *testing.T) {
	echo := echoServer(t)
	s := startExecStream(context.Background(), loopExecutor{port: echo}, "pods/exec of ns/pod")
	defer s.Close()
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	go func() {
		s.Write(payload)
		s.CloseWrite()
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(s)
		got <- b
	}()
	select {
	case b := <-got:
		if !bytes.Equal(b, payload) {
			t.Fatalf("got %d bytes back, sent %d", len(b), len(payload))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no EOF: the half-close did not reach the far end through the exec")
	}
}

func TestExecStreamReportsTheConnectorsError(t *testing.T) {
	s := startExecStream(context.Background(), loopExecutor{
		fail:   errors.New("command terminated with exit code 1"),
		stderr: "Error: connecting to VM /connect at 10.66.10.5:22: connection refused\n",
	}, "pods/exec of ns/virt-launcher-vm-abc")
	_, err := io.ReadAll(s)
	for _, want := range []string{"pods/exec of ns/virt-launcher-vm-abc", "exit code 1", "connection refused"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("read error %v does not say %q", err, want)
		}
	}
	// Writes after the end fail instead of blocking forever.
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("write after the exec ended succeeded")
	}
}

func TestExecTransportNeedsAPod(t *testing.T) {
	tr := &execTransport{}
	_, err := tr.Dial(context.Background(), Endpoint{Namespace: "ns", Name: "vm", Address: "10.66.10.5"}, 22)
	if err == nil || !strings.Contains(err.Error(), "no active launcher pod") {
		t.Fatalf("got %v", err)
	}
}

// TestConnectCommand runs the exec path's far end as a process, as a kubelet would.
func TestConnectCommand(t *testing.T) {
	echo := echoServer(t)
	cmd := helperCommand(t, "127.0.0.1", "v", "connect", "127.0.0.1", itoa(echo))
	cmd.Stdin = strings.NewReader("through the connector\n")
	out, err := cmd.Output()
	if err != nil || string(out) != "through the connector\n" {
		t.Fatalf("connect: %q, %v", out, err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd = helperCommand(t, "127.0.0.1", "v", "connect", "127.0.0.1", itoa(closed))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "connection refused") {
		t.Fatalf("connect to a closed port: %v, stderr %q", err, stderr.String())
	}
}
