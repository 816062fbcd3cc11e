package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// echoServer stands in for a guest's service: it echoes each connection until the client
// half-closes, then half-closes too, so a client only sees EOF if its own EOF got through.
func echoServer(t *testing.T) (port int) {
	t.Helper()
	return serveTCP(t, func(c *net.TCPConn) {
		io.Copy(c, c)
		c.CloseWrite()
	})
}

func serveTCP(t *testing.T, handle func(*net.TCPConn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// loopbackVM resolves every VM to 127.0.0.1, as if the guest's address were local.
func loopbackVM(ctx context.Context, namespace, name string) (Endpoint, error) {
	return Endpoint{Namespace: namespace, Name: name, Address: "127.0.0.1", Pod: "virt-launcher-" + name + "-x"}, nil
}

// syncBuffer is a log several connection handlers write to at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startForward serves pairs through a forwarder and returns the local addresses.
func startForward(t *testing.T, f *forwarder, pairs []PortPair) []string {
	t.Helper()
	lns, err := openListeners("127.0.0.1", pairs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.serveAll(ctx, lns, pairs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serveAll: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serveAll did not return after its context ended")
		}
	})
	var addrs []string
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// roundTrip sends payload, half-closes, and reads everything the other side sends back.
func roundTrip(addr string, payload []byte) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return got, err
	}
	return got, <-werr
}

func TestPortForwardDirectManyConnectionsAndHalfClose(t *testing.T) {
	echo := echoServer(t)
	f := &forwarder{namespace: "default", vm: "linux-vm", resolve: loopbackVM, transport: directTransport{timeout: 5 * time.Second}, log: &syncBuffer{}}
	// Two pairs to the same guest port, as `port-forward linux-vm :P :P` would.
	addrs := startForward(t, f, []PortPair{{Remote: echo}, {Remote: echo}})

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// More than socket buffers hold: the copy must stream, not buffer whole.
			payload := make([]byte, 2<<20+i)
			rand.Read(payload)
			got, err := roundTrip(addrs[i%2], payload)
			switch {
			case err != nil:
				errs <- fmt.Errorf("connection %d: %w", i, err)
			case !bytes.Equal(got, payload):
				errs <- fmt.Errorf("connection %d: got %d bytes back, sent %d (or they differ)", i, len(got), len(payload))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPortForwardServerClosesFirst(t *testing.T) {
	// A guest service that speaks first and hangs up: the client must see its words and
	// EOF while it still has its own side open.
	banner := serveTCP(t, func(c *net.TCPConn) { io.WriteString(c, "SSH-2.0-fake\r\n") })
	f := &forwarder{namespace: "default", vm: "linux-vm", resolve: loopbackVM, transport: directTransport{timeout: 5 * time.Second}, log: &syncBuffer{}}
	addrs := startForward(t, f, []PortPair{{Remote: banner}})
	c, err := net.Dial("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "SSH-2.0-fake\r\n" {
		t.Fatalf("read %q, %v; want the banner then EOF", got, err)
	}
}

func TestPortForwardReportsUnreachableVM(t *testing.T) {
	log := &syncBuffer{}
	stopped := func(ctx context.Context, ns, name string) (Endpoint, error) {
		return endpointOf(&v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Status: v1alpha2.VirtualMachineStatus{Phase: v1alpha2.MachineStopped}})
	}
	// A port nothing listens on: take one and free it.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	for _, tc := range []struct {
		name    string
		resolve Resolver
		want    string
	}{
		{"stopped VM", stopped, "VM default/linux-vm is Stopped: only a Running VM can be reached"},
		{"closed port", loopbackVM, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &forwarder{namespace: "default", vm: "linux-vm", resolve: tc.resolve, transport: directTransport{timeout: 5 * time.Second}, log: log}
			addrs := startForward(t, f, []PortPair{{Remote: closed}})
			got, err := roundTrip(addrs[0], []byte("hello"))
			if len(got) != 0 {
				t.Errorf("read %q from a connection that reaches nothing", got)
			}
			_ = err // the forwarder closes the connection: EOF or a reset, both right
			if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
				return strings.Contains(log.String(), tc.want), nil
			}); err != nil {
				t.Fatalf("log %q does not say %q", log.String(), tc.want)
			}
		})
	}
}

func TestStdioBridgesAndHalfCloses(t *testing.T) {
	echo := echoServer(t)
	f := &forwarder{namespace: "default", vm: "linux-vm", resolve: loopbackVM, transport: directTransport{timeout: 5 * time.Second}, log: &syncBuffer{}}
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	var out bytes.Buffer
	// stdin ends after the payload: the echo only answers in full once that EOF reaches it.
	if err := f.stdio(context.Background(), echo, bytes.NewReader(payload), &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), payload) {
		t.Fatalf("got %d bytes back, sent %d", out.Len(), len(payload))
	}
}

func TestStdioEndsWhenTheVMSideEnds(t *testing.T) {
	banner := serveTCP(t, func(c *net.TCPConn) { io.WriteString(c, "bye\n") })
	f := &forwarder{namespace: "default", vm: "linux-vm", resolve: loopbackVM, transport: directTransport{timeout: 5 * time.Second}, log: &syncBuffer{}}
	stdin, stdinW := io.Pipe() // never closed, as ssh keeps its end open
	defer stdinW.Close()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- f.stdio(context.Background(), banner, stdin, &out) }()
	select {
	case err := <-done:
		if err != nil || out.String() != "bye\n" {
			t.Fatalf("stdio: %q, %v", out.String(), err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stdio did not return when the VM's side closed")
	}
}

func TestStdioRefusesAVMWithoutAddress(t *testing.T) {
	f := &forwarder{namespace: "ns", vm: "db", transport: directTransport{timeout: time.Second}, log: io.Discard,
		resolve: func(ctx context.Context, ns, name string) (Endpoint, error) {
			return endpointOf(&v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Status: v1alpha2.VirtualMachineStatus{Phase: v1alpha2.MachineRunning}})
		}}
	err := f.stdio(context.Background(), 22, strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "has no IP address") {
		t.Fatalf("got %v, want the VM's missing address named", err)
	}
}

// fakeTransport records that it was used and reaches the echo server.
type fakeTransport struct {
	used int
	port int
}

func (f *fakeTransport) Dial(ctx context.Context, vm Endpoint, port int) (Stream, error) {
	f.used++
	return directTransport{timeout: time.Second}.Dial(ctx, Endpoint{Address: "127.0.0.1"}, f.port)
}

func TestAutoTransportChoosesDirectWhenTheAddressAnswers(t *testing.T) {
	echo := echoServer(t)
	api := &fakeTransport{port: echo}
	a := &autoTransport{direct: directTransport{timeout: time.Second}, api: api}
	ep, _ := loopbackVM(context.Background(), "default", "vm")
	s, err := a.Dial(context.Background(), ep, echo)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A refused port is an answer too: the guest was reached.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if _, err := a.Dial(context.Background(), ep, closed); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial of a closed port: %v, want connection refused", err)
	}
	if api.used != 0 {
		t.Fatalf("the API path was used %d times though the address answered", api.used)
	}
}

func TestAutoTransportFallsBackToTheAPI(t *testing.T) {
	echo := echoServer(t)
	api := &fakeTransport{port: echo}
	a := &autoTransport{direct: directTransport{timeout: time.Second}, api: api}
	// No address to dial from here: only the API path can reach this VM.
	s, err := a.Dial(context.Background(), Endpoint{Namespace: "default", Name: "vm", Pod: "p"}, 22)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := a.Dial(context.Background(), Endpoint{Namespace: "default", Name: "vm", Pod: "p"}, 22); err != nil {
		t.Fatal(err)
	}
	if api.used != 2 {
		t.Fatalf("API path used %d times, want 2 (chosen once, then kept)", api.used)
	}
}

// TestPortForwardCommand runs `ferry v port-forward VM :PORT PORT2:PORT` as a process
// (every VM at 127.0.0.1) and uses what it prints to connect.
func TestPortForwardCommand(t *testing.T) {
	echo := echoServer(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	fixed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := helperCommand(t, "127.0.0.1", "v", "port-forward", "--transport", "direct", "linux-vm", fmt.Sprintf(":%d", echo), fmt.Sprintf("%d:%d", fixed, echo))
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	stop := func() error {
		cmd.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			return err
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			return errors.New("port-forward did not end within 10s of Ctrl-C")
		}
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	defer func() {
		if !t.Failed() {
			return
		}
		cmd.Process.Kill()
	}()
	var addrs []string
	for len(addrs) < 2 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("port-forward ended after %q: %s", addrs, stderr.String())
			}
			var addr, target string
			if _, err := fmt.Sscanf(l, "Forwarding from %s -> %s", &addr, &target); err != nil || target != fmt.Sprintf("default/linux-vm:%d", echo) {
				t.Fatalf("line %q: want Forwarding from ADDR -> default/linux-vm:%d", l, echo)
			}
			addrs = append(addrs, addr)
		case <-time.After(20 * time.Second):
			t.Fatal("port-forward printed no listeners in 20s")
		}
	}
	if addrs[1] != fmt.Sprintf("127.0.0.1:%d", fixed) {
		t.Fatalf("second listener %s, want 127.0.0.1:%d", addrs[1], fixed)
	}
	for _, a := range addrs {
		if got, err := roundTrip(a, []byte("ping\n")); err != nil || string(got) != "ping\n" {
			t.Fatalf("through %s: %q, %v", a, got, err)
		}
	}
	// Ctrl-C ends it cleanly, exit code 0.
	if err := stop(); err != nil {
		t.Fatalf("after Ctrl-C: %v; stderr %s", err, stderr.String())
	}
}
