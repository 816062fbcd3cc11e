package launcher

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ferryvm/ferry/internal/hypervisor"
)

// migrationRun is one outgoing migration.
type migrationRun struct {
	uri        string
	params     hypervisor.MigrationParams
	completion time.Duration
	progress   time.Duration
	started    time.Time
	wasRunning bool
	tlsHost    string        // the target node, when over TLS
	done       chan struct{} // closed when the monitor has finished
}

// handleMigrate serves POST /migrate.
func (l *launcher) handleMigrate(w http.ResponseWriter, r *http.Request) {
	var req MigrationRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad migration request: "+err.Error())
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad migration request: trailing data after the JSON object")
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, "bad migration request: "+err.Error())
		return
	}
	m := &migrationRun{
		uri:        req.URI,
		params:     hypervisor.MigrationParams{MaxBandwidth: req.MaxBandwidthBytes, AutoConverge: req.AutoConverge},
		completion: time.Duration(req.CompletionTimeoutSeconds) * time.Second,
		progress:   time.Duration(req.ProgressTimeoutSeconds) * time.Second,
		done:       make(chan struct{}),
	}
	// Always send every parameter: QEMU keeps them between migrations.
	m.params.DowntimeLimit = time.Duration(req.DowntimeLimitMs) * time.Millisecond
	if m.params.MaxBandwidth == 0 {
		m.params.MaxBandwidth = DefaultMaxBandwidth
	}
	if m.params.DowntimeLimit == 0 {
		m.params.DowntimeLimit = DefaultDowntimeLimit
	}
	if m.completion == 0 {
		m.completion = DefaultCompletionTimeout(l.memoryKiB * 1024)
	}
	if m.progress == 0 {
		m.progress = DefaultProgressTimeout
	}

	qctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	state, err := l.vm.Status(qctx)
	cancel()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "cannot query the VM: "+err.Error())
		return
	}
	l.mu.Lock()
	switch {
	case l.stopping:
		l.mu.Unlock()
		writeError(w, http.StatusConflict, "the VM is stopping")
		return
	case l.mig != nil && !l.migStatus.Finished():
		l.mu.Unlock()
		writeError(w, http.StatusConflict, "a migration to "+l.mig.uri+" is already running")
		return
	case l.migStatus != nil && l.migStatus.Status == "completed":
		l.mu.Unlock()
		writeError(w, http.StatusConflict, "the VM has already migrated to "+l.mig.uri)
		return
	case state != "running" && state != "paused":
		l.mu.Unlock()
		writeError(w, http.StatusConflict, "cannot migrate a VM in state "+state)
		return
	case l.hp.unsettled() != "":
		why := l.hp.unsettled()
		l.mu.Unlock()
		writeError(w, http.StatusConflict, "a disk hot-plug is in progress ("+why+"): migrate once it is done")
		return
	case !sameLayout(req.BlockDevices, l.hp.layout()):
		have := l.hp.layout()
		l.mu.Unlock()
		writeError(w, http.StatusConflict, fmt.Sprintf("the target was started with hot-plugged disks %s, but this VM has %s: QEMU needs the same devices on both sides",
			describeLayout(req.BlockDevices), describeLayout(have)))
		return
	}
	m.wasRunning = state == "running"
	if l.tlsDir != "" {
		m.tlsHost = req.TargetNode
	}
	m.started = time.Now()
	l.mig = m
	l.migStatus = &MigrationStatus{URI: m.uri, Status: "setup", StartedAt: m.started.UTC(), TLSHostname: m.tlsHost}
	l.mu.Unlock()

	var cleanupTLS func()
	if l.tlsDir != "" {
		m.params.TLS, cleanupTLS, err = l.outgoingTLS(req.TargetNode)
	}
	if err == nil {
		l.log.printf("migrating to %s (%s; max %d B/s, downtime %v, auto-converge %v, completion timeout %v, progress timeout %v)",
			m.uri, m.params.TLS.Describe(), m.params.MaxBandwidth, m.params.DowntimeLimit, m.params.AutoConverge, m.completion, m.progress)
		qctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		err = l.vm.MigrateOut(qctx, m.uri, m.params)
		cancel()
		if cleanupTLS != nil {
			cleanupTLS() // QEMU has read the credentials
		}
		if err != nil {
			err = fmt.Errorf("migrate: %w", err)
		}
	}
	if err != nil {
		msg := err.Error()
		l.log.printf("migration to %s not started: %s", m.uri, msg)
		l.mu.Lock()
		l.migStatus.Status, l.migStatus.Error = "failed", msg
		l.mu.Unlock()
		close(m.done)
		writeError(w, http.StatusInternalServerError, msg)
		return
	}
	go l.monitorMigration(m)
	writeJSON(w, http.StatusAccepted, map[string]bool{"accepted": true})
}

// handleMigrateCancel serves POST /migrate/cancel.
func (l *launcher) handleMigrateCancel(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	m := l.mig
	active := m != nil && !l.migStatus.Finished()
	l.mu.Unlock()
	if !active {
		writeError(w, http.StatusConflict, "no migration is running")
		return
	}
	l.log.printf("cancelling the migration to %s (requested via API)", m.uri)
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	err := l.vm.CancelMigration(ctx)
	cancel()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "migrate_cancel: "+err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]bool{"accepted": true})
}

// monitorMigration polls query-migrate until the migration ends, enforces
// the completion and progress timeouts, and then either hands the loop the
// "migrated" outcome or makes sure the guest runs on here.
func (l *launcher) monitorMigration(m *migrationRun) {
	defer close(m.done)
	tick := time.NewTicker(migrationPollInterval)
	defer tick.Stop()
	var (
		failReason   string // set once the launcher cancelled on a timeout
		lowest       int64  = -1
		lastProgress        = m.started
		prev         MigrationStatus
	)
	for {
		qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := l.vm.MigrationStatus(qctx)
		cancel()
		if err != nil {
			select {
			case <-l.vm.Done():
				l.finishMigration(m, &MigrationStatus{Status: "failed", Error: "qemu exited during the migration"}, prev)
				return
			default:
			}
			l.log.printf("query-migrate: %v", err)
		} else {
			st := toMigrationStatus(info)
			if failReason != "" && st.Finished() && st.Status != "completed" {
				st.Status, st.Error = "failed", failReason
			}
			if st.Finished() {
				l.finishMigration(m, st, prev)
				return
			}
			l.setMigrationStatus(m, st)
			prev = *st

			now := time.Now()
			if info.RAMTotal > 0 && (lowest < 0 || info.RAMRemaining < lowest) {
				lowest, lastProgress = info.RAMRemaining, now
			}
			if failReason == "" {
				switch {
				case now.Sub(m.started) >= m.completion:
					failReason = fmt.Sprintf("did not converge within %ds (%d bytes still to copy)",
						int64(m.completion/time.Second), info.RAMRemaining)
				case now.Sub(lastProgress) >= m.progress:
					failReason = fmt.Sprintf("no progress for %ds: remaining bytes (%d) did not decrease",
						int64(m.progress/time.Second), info.RAMRemaining)
				}
				if failReason != "" {
					l.log.printf("cancelling the migration to %s: %s", m.uri, failReason)
					cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					if err := l.vm.CancelMigration(cctx); err != nil {
						l.log.printf("migrate_cancel: %v", err)
					}
					cancel()
				}
			}
		}
		select {
		case <-tick.C:
		case <-l.vm.Done():
		}
	}
}

func toMigrationStatus(info hypervisor.MigrationInfo) *MigrationStatus {
	return &MigrationStatus{
		Status:             info.Status,
		TotalTimeMs:        info.TotalTime.Milliseconds(),
		DowntimeMs:         info.Downtime.Milliseconds(),
		ExpectedDowntimeMs: info.ExpectedDowntime.Milliseconds(),
		SetupTimeMs:        info.SetupTime.Milliseconds(),
		TransferredBytes:   info.RAMTransferred,
		RemainingBytes:     info.RAMRemaining,
		TotalBytes:         info.RAMTotal,
		DirtyPagesRate:     info.DirtyPagesRate,
		DirtySyncCount:     info.DirtySyncCount,
		ThrottlePercent:    info.CPUThrottle,
		Error:              info.Error,
	}
}

func (l *launcher) setMigrationStatus(m *migrationRun, st *MigrationStatus) {
	st.URI, st.StartedAt, st.TLSHostname = m.uri, m.started.UTC(), m.tlsHost
	l.mu.Lock()
	l.migStatus = st
	l.mu.Unlock()
}

// finishMigration records the final status (QEMU omits the counters of a
// failed or cancelled migration, so the last ones seen are kept) and acts
// on it.
func (l *launcher) finishMigration(m *migrationRun, st *MigrationStatus, prev MigrationStatus) {
	if st.Status != "completed" {
		if st.TotalBytes == 0 {
			st.TransferredBytes, st.RemainingBytes, st.TotalBytes = prev.TransferredBytes, prev.RemainingBytes, prev.TotalBytes
			st.DirtyPagesRate, st.ThrottlePercent = prev.DirtyPagesRate, prev.ThrottlePercent
			st.SetupTimeMs = prev.SetupTimeMs
		}
		if st.TotalTimeMs == 0 {
			st.TotalTimeMs = time.Since(m.started).Milliseconds()
		}
		if st.Error == "" && st.Status == "failed" {
			st.Error = "migration failed"
		}
	}
	l.setMigrationStatus(m, st)
	if st.Status == "completed" {
		l.log.printf("migration to %s completed: total %v, downtime %v, %d of %d RAM bytes sent",
			m.uri, time.Duration(st.TotalTimeMs)*time.Millisecond, time.Duration(st.DowntimeMs)*time.Millisecond,
			st.TransferredBytes, st.TotalBytes)
		l.net.detach("the guest migrated away") // if the MIGRATION event was missed
		select {
		case l.migrated <- m.uri:
		default:
		}
		return
	}
	l.log.printf("migration to %s %s after %v: %s", m.uri, st.Status, time.Duration(st.TotalTimeMs)*time.Millisecond, st.Error)
	l.hp.kick() // disks asked for meanwhile may be attached now
	select {
	case <-l.vm.Done():
		return
	default:
	}
	// QEMU restarts the vCPUs itself after a failed or cancelled migration
	// if they ran before; make sure of it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	state, err := l.vm.Status(ctx)
	switch {
	case err != nil:
		l.log.printf("after the failed migration: query-status: %v", err)
	case state == "running" || !m.wasRunning:
		l.log.printf("guest %s on this node", state)
	default:
		l.log.printf("guest left %s after the failed migration; resuming it", state)
		if err := l.vm.Resume(ctx); err != nil {
			l.log.printf("cont: %v", err)
		}
	}
}

// cancelActiveMigration cancels a running outgoing migration and waits (up
// to d) for it to end. It reports whether the VM has migrated after all.
func (l *launcher) cancelActiveMigration(d time.Duration) (migrated bool) {
	l.mu.Lock()
	m := l.mig
	l.mu.Unlock()
	if m == nil {
		return false
	}
	select {
	case <-m.done:
	default:
		l.log.printf("cancelling the migration to %s before stopping", m.uri)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := l.vm.CancelMigration(ctx); err != nil {
			l.log.printf("migrate_cancel: %v", err)
		}
		cancel()
		t := time.NewTimer(d)
		select {
		case <-m.done:
		case <-t.C:
			l.log.printf("migration did not end within %v of migrate_cancel", d)
		}
		t.Stop()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.migStatus != nil && l.migStatus.Status == "completed"
}

// FinalMigrationName is the file in RunDir that keeps a completed migration's last status,
// for the node agent to report after the launcher has exited.
const FinalMigrationName = "migration.json"

func (l *launcher) saveFinalMigration() {
	l.mu.Lock()
	st := l.migStatus
	l.mu.Unlock()
	if st == nil {
		return
	}
	if b, err := json.Marshal(st); err == nil {
		_ = os.WriteFile(filepath.Join(l.o.RunDir, FinalMigrationName), b, 0o644)
	}
}

// FinalMigration reads the status a launcher saved when its VM migrated away.
func FinalMigration(runDir string) (*MigrationStatus, error) {
	b, err := os.ReadFile(filepath.Join(runDir, FinalMigrationName))
	if err != nil {
		return nil, err
	}
	var st MigrationStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// migrationSummary describes a completed migration for the termination
// message: "migrated to URI: total 1.2s, downtime 35ms, ...".
func (l *launcher) migrationSummary(uri string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	msg := "migrated to " + uri
	if st := l.migStatus; st != nil && st.Status == "completed" {
		msg += fmt.Sprintf(": total %v, downtime %v, %d MiB sent",
			time.Duration(st.TotalTimeMs)*time.Millisecond, time.Duration(st.DowntimeMs)*time.Millisecond,
			st.TransferredBytes>>20)
	}
	return msg
}

// freePort returns a TCP port on host that is free right now. QEMU binds it
// a moment later; migrate-incoming is retried if someone took it meanwhile.
var freePort = func(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// migrationAddress is where an incoming migration listens:
// Options.MigrationAddress, else $FERRY_NODE_IP, else 127.0.0.1.
func migrationAddress(o Options) string {
	if o.MigrationAddress != "" {
		return o.MigrationAddress
	}
	if ip := strings.TrimSpace(os.Getenv("FERRY_NODE_IP")); ip != "" {
		return ip
	}
	return "127.0.0.1"
}

// prepareIncoming makes an -incoming defer QEMU listen on a free port of
// addr and returns the URI. A port taken between choosing and binding it is
// retried with another one.
func prepareIncoming(ctx context.Context, v vm, addr string, tls *hypervisor.MigrationTLS) (string, error) {
	const attempts = 5
	var lastErr error
	for range attempts {
		port, err := freePort(addr)
		if err != nil {
			return "", fmt.Errorf("migration address %s: %w", addr, err)
		}
		uri := "tcp:" + net.JoinHostPort(addr, strconv.Itoa(port))
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = v.PrepareIncoming(qctx, uri, tls)
		cancel()
		if err == nil {
			return uri, nil
		}
		lastErr = err
		if !strings.Contains(strings.ToLower(err.Error()), "in use") {
			break
		}
	}
	return "", fmt.Errorf("migrate-incoming: %w", lastErr)
}

// StartMigration asks the launcher serving runDir to live-migrate its VM as
// req says. It returns once the migration started; follow it with StatusOf
// (Status.Migration). On success the launcher exits with ExitMigrated.
func StartMigration(ctx context.Context, runDir string, req MigrationRequest) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return callBody(ctx, runDir, http.MethodPost, "/migrate", body, http.StatusAccepted, nil)
}

// CancelMigration asks the launcher serving runDir to cancel its outgoing
// migration; the guest keeps running there. The cancellation is
// asynchronous: Status.Migration turns "cancelled" (or, if it was too late,
// "completed").
func CancelMigration(ctx context.Context, runDir string) error {
	return call(ctx, runDir, http.MethodPost, "/migrate/cancel", http.StatusAccepted, nil)
}
