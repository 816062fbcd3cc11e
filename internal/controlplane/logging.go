package controlplane

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/textlogger"
)

// swapWriter is the process-wide destination of klog output. klog is global,
// so it is configured once and re-pointed on every Start.
type swapWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *swapWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return len(p), nil
	}
	return s.w.Write(p)
}

func (s *swapWriter) set(w io.Writer) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}

var (
	klogOnce sync.Once
	klogOut  = &swapWriter{}
)

// redirectKlog sends all klog output (which otherwise goes to stderr) to w.
func redirectKlog(w io.Writer) {
	klogOnce.Do(func() {
		fs := flag.NewFlagSet("klog", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		klog.InitFlags(fs)
		for name, value := range map[string]string{
			"logtostderr":     "false",
			"alsologtostderr": "false",
			"stderrthreshold": "FATAL",
			"one_output":      "true",
			"v":               "0",
		} {
			_ = fs.Set(name, value)
		}
		klog.SetOutput(klogOut)
	})
	klogOut.set(w)
}

// logSinks holds the writers of one control plane instance.
type logSinks struct {
	files  []*os.File
	shared io.Writer // non-nil when Options.Log is set
	dir    string
}

func newLogSinks(dataDir string, shared io.Writer) (*logSinks, error) {
	l := &logSinks{shared: shared, dir: filepath.Join(dataDir, "logs")}
	if shared == nil {
		if err := os.MkdirAll(l.dir, 0o755); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// writer returns the destination for component name (e.g. "etcd").
func (l *logSinks) writer(name string) (io.Writer, error) {
	if l.shared != nil {
		return &lockedWriter{w: l.shared}, nil
	}
	f, err := os.OpenFile(filepath.Join(l.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	l.files = append(l.files, f)
	return f, nil
}

// logger returns a contextual klog logger writing to the component's sink.
func (l *logSinks) logger(name string) (logr.Logger, io.Writer, error) {
	w, err := l.writer(name)
	if err != nil {
		return logr.Discard(), nil, err
	}
	cfg := textlogger.NewConfig(textlogger.Output(w), textlogger.Verbosity(0))
	return textlogger.NewLogger(cfg).WithName(name), w, nil
}

// lockedWriter serialises writes to a shared io.Writer.
type lockedWriter struct {
	w io.Writer
}

var sharedMu sync.Mutex

func (l *lockedWriter) Write(p []byte) (int, error) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	return l.w.Write(p)
}

// close releases component log files except the one klog still points at
// (global klog output may continue from goroutines that outlive Stop).
func (l *logSinks) close(keep io.Writer) {
	for _, f := range l.files {
		if io.Writer(f) == keep {
			continue
		}
		_ = f.Close()
	}
}
