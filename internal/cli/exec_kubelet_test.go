package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	proxy "k8s.io/apiserver/pkg/util/proxy"
	"k8s.io/client-go/rest"
	kubeletexec "k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// connectorInContainer is the container runtime's side of an exec, as a kubelet's
// streaming server drives it: it runs `ferry v connect ADDRESS PORT` in-process.
type connectorInContainer struct {
	mu   sync.Mutex
	seen []string // "pod/container: command"
}

func (e *connectorInContainer) ExecInContainer(ctx context.Context, pod, uid, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser,
	tty bool, resize <-chan kubeletexec.TerminalSize, timeout time.Duration) error {
	e.mu.Lock()
	e.seen = append(e.seen, pod+"/"+container+": "+strings.Join(cmd, " "))
	e.mu.Unlock()
	if len(cmd) != 5 || !slices.Equal(cmd[:3], []string{"ferry", "v", "connect"}) {
		return fmt.Errorf("unexpected command %q", cmd)
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(cmd[3], cmd[4]), 5*time.Second)
	if err != nil {
		fmt.Fprintf(errOut, "Error: %v\n", err)
		return fmt.Errorf("command terminated with exit code 1")
	}
	return bridgeStdio(c.(*net.TCPConn), in, out)
}

// fakeAPIServer serves pods/exec the way a cluster does, minus authentication: a
// websocket request (client-go's first choice) goes through the apiserver's stream
// translator to the kubelet's SPDY exec server; with websockets refused, the client falls
// back to SPDY, which the kubelet code serves directly.
func fakeAPIServer(t *testing.T, runtime kubeletexec.Executor, websockets bool) *rest.Config {
	t.Helper()
	kubelet := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /api/v1/namespaces/NS/pods/POD/exec
		parts := strings.Split(r.URL.Path, "/")
		if len(parts) != 8 || parts[7] != "exec" {
			http.Error(w, "not an exec", http.StatusNotFound)
			return
		}
		opts, err := kubeletexec.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		kubeletexec.ServeExec(w, r, runtime, parts[6], "", r.FormValue("container"), r.URL.Query()["command"], opts,
			time.Minute, 30*time.Second, kubeletexec.SupportedStreamingProtocols)
	})
	kubeletSrv := httptest.NewServer(kubelet)
	t.Cleanup(kubeletSrv.Close)

	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The apiserver asks the kubelet with its own parameters (input=1, not stdin=true).
		r.URL.RawQuery = kubeletQuery(r.URL.Query()).Encode()
		r.Form = nil
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			kubelet.ServeHTTP(w, r)
			return
		}
		if !websockets {
			http.Error(w, "websockets are not served here", http.StatusBadRequest)
			return
		}
		loc, _ := url.Parse(kubeletSrv.URL + r.URL.Path + "?" + r.URL.RawQuery)
		proxy.NewStreamTranslatorHandler(loc, http.DefaultTransport, 0, proxy.Options{Stdin: true, Stdout: true, Stderr: true}).ServeHTTP(w, r)
	})
	apiSrv := httptest.NewServer(api)
	t.Cleanup(apiSrv.Close)
	return &rest.Config{Host: apiSrv.URL}
}

func TestExecTransportThroughKubeletStreaming(t *testing.T) {
	for _, websockets := range []bool{true, false} {
		t.Run(fmt.Sprintf("websockets=%v", websockets), func(t *testing.T) {
			echo := echoServer(t)
			runtime := &connectorInContainer{}
			tr, err := newExecTransport(fakeAPIServer(t, runtime, websockets))
			if err != nil {
				t.Fatal(err)
			}
			vm := Endpoint{Namespace: "prod", Name: "db", Address: "127.0.0.1", Pod: "virt-launcher-db-abcde"}

			s, err := tr.Dial(context.Background(), vm, echo)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			payload := make([]byte, 1<<20)
			rand.Read(payload)
			go func() {
				s.Write(payload)
				s.CloseWrite()
			}()
			got := make(chan []byte, 1)
			errc := make(chan error, 1)
			go func() {
				b, err := io.ReadAll(s)
				got <- b
				errc <- err
			}()
			select {
			case b := <-got:
				if err := <-errc; err != nil || !bytes.Equal(b, payload) {
					t.Fatalf("got %d bytes back (sent %d), %v", len(b), len(payload), err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no EOF through the exec: the half-close was lost")
			}
			want := fmt.Sprintf("virt-launcher-db-abcde/compute: ferry v connect 127.0.0.1 %d", echo)
			runtime.mu.Lock()
			seen := slices.Clone(runtime.seen)
			runtime.mu.Unlock()
			if !slices.Equal(seen, []string{want}) {
				t.Fatalf("execs %q, want [%q]", seen, want)
			}

			// A refused port: the connector's words come back as the read error.
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			closed := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			s, err = tr.Dial(context.Background(), vm, closed)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := io.ReadAll(s); err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "pods/exec of prod/virt-launcher-db-abcde") {
				t.Fatalf("read from an exec to a closed port: %v", err)
			}
		})
	}
}

// kubeletQuery turns PodExecOptions' query into the kubelet's exec parameters, as the
// apiserver's pods/exec location does.
func kubeletQuery(q url.Values) url.Values {
	k := url.Values{"command": q["command"], "container": q["container"]}
	for from, to := range map[string]string{"stdin": "input", "stdout": "output", "stderr": "error", "tty": "tty"} {
		if q.Get(from) == "true" {
			k.Set(to, "1")
		}
	}
	return k
}
