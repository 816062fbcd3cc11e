package launcher

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ferryvm/ferry/internal/guestagent"
)

// AgentStatus is what the launcher knows of the QEMU guest agent in its guest.
type AgentStatus struct {
	// Connected is true while the agent answered its last sync.
	Connected bool `json:"connected"`
	// Report is what the agent last told about the guest (kept while it answers).
	Report *GuestReport `json:"report,omitempty"`
}

// GuestReport is v1alpha2.GuestAgentReport (same fields and JSON, which launchers of other
// releases send) without linking the API types into the launcher.
type GuestReport struct {
	OS         *guestagent.OSInfo     `json:"os,omitempty"`
	Hostname   string                 `json:"hostname,omitempty"`
	Interfaces []guestagent.Interface `json:"interfaces,omitempty"`
}

// How often the launcher talks to the guest agent: a sync (is it there?) every agentPoll,
// the guest's OS, host name and addresses every agentQuery, and at once when the agent
// (re)appears. An agent that does not answer a sync within agentTimeout is not there.
const (
	agentPoll    = 5 * time.Second
	agentQuery   = 30 * time.Second
	agentTimeout = 3 * time.Second
)

// agentWatch keeps the launcher's view of the guest agent.
type agentWatch struct {
	socket string

	mu     sync.Mutex
	status AgentStatus
	client *guestagent.Client
}

func (a *agentWatch) get() *AgentStatus {
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.status
	return &st
}

// run talks to the agent until ctx ends (the VM is gone).
func (a *agentWatch) run(ctx context.Context, lg *logger) {
	var c *guestagent.Client
	var lastQuery time.Time
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	t := time.NewTicker(agentPoll)
	defer t.Stop()
	for {
		if c == nil {
			dctx, cancel := context.WithTimeout(ctx, agentTimeout)
			c, _ = guestagent.Dial(dctx, a.socket)
			cancel()
		}
		if c != nil {
			sctx, cancel := context.WithTimeout(ctx, agentTimeout)
			err := c.Sync(sctx)
			cancel()
			switch {
			case err == nil:
				if time.Since(lastQuery) < agentQuery {
					break
				}
				qctx, cancel := context.WithTimeout(ctx, 2*agentTimeout)
				info, err := c.Query(qctx)
				cancel()
				if err != nil {
					break // asked again at the next poll; what was known stays
				}
				lastQuery = time.Now()
				// Connected and the report are shown together: an agent that answers has
				// told what it knows, never an empty report first.
				a.mu.Lock()
				was := a.status.Connected
				a.status.Connected = true
				a.status.Report = &GuestReport{OS: info.OS, Hostname: info.Hostname, Interfaces: info.Interfaces}
				a.client = c
				a.mu.Unlock()
				if !was {
					lg.printf("guest agent answers")
				}
			default:
				a.mu.Lock()
				was := a.status.Connected
				a.status.Connected = false
				a.client = nil
				a.mu.Unlock()
				lastQuery = time.Time{} // an agent that comes back is asked at once
				if was {
					lg.printf("guest agent stopped answering: %v", err)
				}
				if !errors.Is(err, guestagent.ErrNoAgent) {
					// The connection broke (QEMU restarted the chardev): dial again.
					c.Close()
					c = nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// shutdown asks the guest agent, if it answers, to power the guest off. It tells whether the
// request was sent.
func (a *agentWatch) shutdown(ctx context.Context) bool {
	if a == nil {
		return false
	}
	a.mu.Lock()
	c := a.client
	a.mu.Unlock()
	if c == nil {
		return false
	}
	return c.Shutdown(ctx) == nil
}
