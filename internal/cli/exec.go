package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	// client-go's executors fail with this package's UpgradeFailureError (not the one
	// of apimachinery/pkg/util/httpstream): only it makes the SPDY fallback happen.
	"k8s.io/streaming/pkg/httpstream"
)

// launcherContainer is the launcher pod's one container (internal/controller/vm's pod
// template); its image is Ferry's, so `ferry v connect` is there to exec.
const launcherContainer = "compute"

// execTransport reaches a VM through the Kubernetes API: pods/exec runs `ferry v connect`
// in the VM's launcher pod, which runs in the node's network where the VM's /32 route
// lives, and its stdin/stdout become the stream, as `kubectl exec` would. A real kubelet
// serves exec; Ferry's stand-in kubelet under `ferry up` does not (there the direct path
// works).
type execTransport struct {
	cfg       *rest.Config
	clientset kubernetes.Interface
}

func newExecTransport(cfg *rest.Config) (*execTransport, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &execTransport{cfg: cfg, clientset: cs}, nil
}

func (t *execTransport) Dial(ctx context.Context, vm Endpoint, port int) (Stream, error) {
	if vm.Pod == "" {
		return nil, fmt.Errorf("%s has no active launcher pod (status.virtualMachinePods) to exec into", vm)
	}
	if vm.Address == "" {
		return nil, fmt.Errorf("%s has no IP address (status.ipAddress is empty)", vm)
	}
	return t.run(ctx, vm.Namespace, vm.Pod, []string{"ferry", "v", "connect", vm.Address, strconv.Itoa(port)})
}

// run starts command in the launcher pod's container through pods/exec; its stdin and
// stdout are the stream.
func (t *execTransport) run(ctx context.Context, namespace, pod string, command []string) (Stream, error) {
	req := t.clientset.CoreV1().RESTClient().Post().Namespace(namespace).Resource("pods").Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: launcherContainer,
			Command:   command,
			Stdin:     true,
			Stdout:    true,
			Stderr:    true,
		}, scheme.ParameterCodec)
	u := req.URL()
	spdyExec, err := remotecommand.NewSPDYExecutor(t.cfg, "POST", u)
	if err != nil {
		return nil, err
	}
	// Websockets first (kubectl's default since 1.30; RFC 6455 upgrades are GETs), SPDY
	// for older apiservers and proxies that refuse the upgrade.
	wsExec, err := remotecommand.NewWebSocketExecutor(t.cfg, "GET", u.String())
	if err != nil {
		return nil, err
	}
	exec, err := remotecommand.NewFallbackExecutor(wsExec, spdyExec, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return nil, err
	}
	return startExecStream(ctx, exec, fmt.Sprintf("pods/exec of %s/%s", namespace, pod)), nil
}

// startExecStream runs exec with a stream's pipes as its stdin and stdout; what the
// command said on stderr is added to its error.
func startExecStream(ctx context.Context, exec remotecommand.Executor, what string) *pipeStream {
	return startPipeStream(ctx, what, func(ctx context.Context, in io.Reader, out io.Writer) error {
		var stderr cappedBuffer
		err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: in, Stdout: out, Stderr: &stderr})
		if msg := strings.TrimSpace(stderr.String()); err != nil && msg != "" {
			return fmt.Errorf("%w: %s", err, msg)
		}
		return err
	})
}

// pipeStream is a running exchange with something that reads a stdin and writes a stdout
// (an exec, an in-process relay): writes go to its stdin, reads come from its stdout.
// Its end (and, for an exec, the command's complaint on stderr) surfaces as the read
// error, since a byte stream has nowhere else to put it.
type pipeStream struct {
	stdinR  *io.PipeReader
	stdinW  *io.PipeWriter
	stdoutR *io.PipeReader
	cancel  context.CancelFunc
}

// startPipeStream runs run with the stream's pipes; what names it in errors.
func startPipeStream(ctx context.Context, what string, run func(ctx context.Context, in io.Reader, out io.Writer) error) *pipeStream {
	ctx, cancel := context.WithCancel(ctx)
	s := &pipeStream{cancel: cancel}
	s.stdinR, s.stdinW = io.Pipe()
	var stdoutW *io.PipeWriter
	s.stdoutR, stdoutW = io.Pipe()
	go func() {
		err := run(ctx, s.stdinR, stdoutW)
		if err != nil {
			err = fmt.Errorf("%s: %w", what, err)
		}
		stdoutW.CloseWithError(err) // nil: the reader sees EOF
		// EOF, not an error, for an executor's stdin copier, which would log one; our own
		// writes after this fail with io.ErrClosedPipe all the same.
		s.stdinW.Close()
		cancel()
	}()
	return s
}

func (s *pipeStream) Read(p []byte) (int, error)  { return s.stdoutR.Read(p) }
func (s *pipeStream) Write(p []byte) (int, error) { return s.stdinW.Write(p) }

// CloseWrite ends the far end's stdin: an executor closes the remote stdin stream, and
// the connector half-closes its TCP connection.
func (s *pipeStream) CloseWrite() error { return s.stdinW.Close() }

func (s *pipeStream) Close() error {
	s.cancel()
	s.stdinW.Close()
	s.stdoutR.CloseWithError(io.ErrClosedPipe)
	return nil
}

// cappedBuffer keeps the first few KiB of the connector's stderr for an error message.
type cappedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 4096 - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// connectCommand is the API path's far end: run by pods/exec in a launcher pod, it joins
// its stdin/stdout to ADDRESS:PORT. Hidden: people use port-forward.
func connectCommand() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:    "connect ADDRESS PORT",
		Short:  "Join stdin/stdout to a TCP port (the far end of port-forward --transport exec)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := parsePort(args[1], false)
			if err != nil {
				return err
			}
			if net.ParseIP(args[0]) == nil {
				return fmt.Errorf("%q is not an IP address", args[0])
			}
			d := net.Dialer{Timeout: timeout}
			c, err := d.DialContext(cmd.Context(), "tcp", net.JoinHostPort(args[0], strconv.Itoa(port)))
			if err != nil {
				return err
			}
			cmd.SilenceUsage = true
			return bridgeStdio(c.(*net.TCPConn), os.Stdin, os.Stdout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "give up connecting after this long")
	return cmd
}
