package launcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// Status is the launcher's view of its VM (GET /status).
type Status struct {
	VMName    string `json:"vmName,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// QEMU is the QMP run state: "running", "paused", "inmigrate",
	// "postmigrate", "shutdown", ..., or "unknown" when QMP did not answer.
	QEMU string `json:"qemu"`
	// Fault is QEMU's evidence that the guest cannot run: it panicked, or QEMU paused it on
	// a disk I/O error. A guest that runs and prints nothing has none.
	Fault *hypervisor.Fault `json:"fault,omitempty"`
	// Agent is the QEMU guest agent's state (nil: the VM has no agent channel).
	Agent *AgentStatus `json:"agent,omitempty"`
	// Booted, Heartbeat and HeartbeatAt follow the lines Ferry's own test guest prints on
	// its serial console. They are a test fixture: the platform decides nothing from them.
	Booted      bool      `json:"booted"`
	Heartbeat   int64     `json:"heartbeat"`
	HeartbeatAt time.Time `json:"heartbeatAt,omitzero"` // RFC 3339 (nanoseconds)
	PID         int       `json:"pid"`
	IP          string    `json:"ip,omitempty"`
	Accel       string    `json:"accel,omitempty"`
	Stopping    bool      `json:"stopping,omitempty"`
	// IncomingURI is where a target launcher (Options.Incoming) waits for
	// the migration stream, "tcp:ADDR:PORT"; set while QEMU is "inmigrate".
	IncomingURI string `json:"incomingURI,omitempty"`
	// Migration is the current or last outgoing migration, if any.
	Migration *MigrationStatus `json:"migration,omitempty"`
	// BlockDevices are the VM's hot-plugged disks, by slot (blockdevices.go).
	BlockDevices []BlockDeviceStatus `json:"blockDevices,omitempty"`
}

// handler serves:
//
//	GET  /status          Status as JSON
//	POST /shutdown        graceful stop (202; the launcher then exits 0)
//	POST /migrate         start a live migration, MigrationRequest as JSON
//	                      (202; 400 bad request, 409 one is running)
//	POST /migrate/cancel  cancel it (202; 409 none is running)
//	PUT  /blockdevices    the disks the VM is to have hot-plugged, BlockDevicesRequest as
//	                      JSON (202; 400 bad request, 409 not now: migrating, stopping)
//
// Errors are {"error":"..."}.
func (l *launcher) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", l.handleStatus)
	mux.HandleFunc("POST /shutdown", l.handleShutdown)
	mux.HandleFunc("POST /migrate", l.handleMigrate)
	mux.HandleFunc("POST /migrate/cancel", l.handleMigrateCancel)
	mux.HandleFunc("PUT /blockdevices", l.handleBlockDevices)
	return mux
}

func (l *launcher) status(ctx context.Context) Status {
	st := Status{VMName: l.o.VMName, Namespace: l.o.Namespace, PID: l.vm.PID(), Accel: l.accel, Stopping: l.isStopping()}
	select {
	case <-l.vm.Done():
		st.QEMU = "exited"
	default:
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		s, err := l.vm.Status(qctx)
		cancel()
		if err != nil {
			s = "unknown"
		}
		st.QEMU = s
	}
	st.Fault = l.vm.Fault()
	st.Agent = l.agent.get()
	st.Booted = l.hb.Booted() || l.incomingDone(st.QEMU)
	if l.incomingURI != "" && st.QEMU == "inmigrate" {
		st.IncomingURI = l.incomingURI
	}
	l.mu.Lock()
	if l.migStatus != nil {
		m := *l.migStatus
		st.Migration = &m
	}
	st.BlockDevices = l.hp.statuses()
	l.mu.Unlock()
	if n, at, ok := l.hb.Heartbeat(); ok {
		st.Heartbeat, st.HeartbeatAt = n, at.UTC()
	}
	if ip, ok := l.hb.(interface{ IP() string }); ok {
		st.IP = ip.IP()
	}
	return st
}

func (l *launcher) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, l.status(r.Context()))
}

func (l *launcher) handleShutdown(w http.ResponseWriter, r *http.Request) {
	l.requestStop("shutdown requested via API")
	writeJSON(w, http.StatusAccepted, map[string]bool{"accepted": true})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// client returns an HTTP client that talks to RunDir/launcher.sock.
func client(runDir string) *http.Client {
	sock := filepath.Join(runDir, SocketName)
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
}

func call(ctx context.Context, runDir, method, path string, want int, out any) error {
	return callBody(ctx, runDir, method, path, nil, want, out)
}

func callBody(ctx context.Context, runDir, method, path string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://launcher"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client(runDir).Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (%s): %v", ErrNoLauncher, runDir, err)
		}
		return fmt.Errorf("launcher %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("launcher %s %s: %w", method, path, err)
	}
	if resp.StatusCode != want {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("launcher %s %s: %s: %s", method, path, resp.Status, e.Error)
		}
		return fmt.Errorf("launcher %s %s: %s: %s", method, path, resp.Status, oneLine(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("launcher %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// StatusOf asks the launcher serving runDir for its Status. It returns an
// error wrapping ErrNoLauncher when nothing listens there.
func StatusOf(ctx context.Context, runDir string) (Status, error) {
	var st Status
	err := call(ctx, runDir, http.MethodGet, "/status", http.StatusOK, &st)
	return st, err
}

// RequestShutdown asks the launcher serving runDir to stop its VM
// gracefully. It returns once the request was accepted; the launcher exits
// when the VM is gone.
func RequestShutdown(ctx context.Context, runDir string) error {
	return call(ctx, runDir, http.MethodPost, "/shutdown", http.StatusAccepted, nil)
}

// TerminationMessage returns the content of RunDir/termination-message, if
// any.
func TerminationMessage(runDir string) string {
	b, _ := os.ReadFile(filepath.Join(runDir, TerminationMessageName))
	return string(b)
}
