package controlplane

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"
)

// Stop shuts the control plane down in order — kube-scheduler and
// kube-controller-manager, then kube-apiserver, then etcd — within timeout.
// A component that does not return in its share of the time is abandoned
// (its goroutines may linger until the process exits) and reported in the
// returned error; the next component is stopped anyway. Stop is idempotent:
// later calls wait for the first one and return its result.
func (c *ControlPlane) Stop(timeout time.Duration) error {
	c.stopOnce.Do(func() {
		c.stopErr = c.shutdown(timeout)
		close(c.stopped)
	})
	select {
	case <-c.stopped:
		return c.stopErr
	case <-time.After(timeout):
		return fmt.Errorf("controlplane: stop still in progress after %s", timeout)
	}
}

// waitDone waits for done to be closed (or to deliver) until deadline.
func waitDone(done <-chan error, deadline time.Time) bool {
	if done == nil {
		return true
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// shutdown performs the ordered stop. It also cleans up after a failed Start,
// where only some components may be running.
func (c *ControlPlane) shutdown(timeout time.Duration) error {
	select {
	case <-c.stopping:
	default:
		close(c.stopping)
	}
	defer func() {
		runningMu.Lock()
		running = false
		runningMu.Unlock()
	}()
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	start := time.Now()
	// Time budget, as absolute deadlines so that unused time rolls over:
	// components up to 30%, apiserver up to 75%, etcd the rest.
	phase := func(frac float64) time.Time { return start.Add(time.Duration(float64(timeout) * frac)) }
	var errs []error

	if c.cancelComponents != nil {
		c.cancelComponents()
		d := phase(0.3)
		if !waitDone(c.kcmDone, d) {
			errs = append(errs, errors.New("kube-controller-manager did not stop in time"))
		}
		if !waitDone(c.schedDone, d) {
			errs = append(errs, errors.New("kube-scheduler did not stop in time"))
		}
	}
	if c.cancelAPIServer != nil {
		c.cancelAPIServer()
		if !waitDone(c.apiDone, phase(0.75)) {
			errs = append(errs, errors.New("kube-apiserver did not stop in time"))
		}
	}
	if c.etcd != nil {
		remaining := time.Until(start.Add(timeout))
		if remaining < 500*time.Millisecond {
			remaining = 500 * time.Millisecond
		}
		if err := closeEtcd(c.etcd, remaining); err != nil {
			errs = append(errs, err)
		}
	}
	klog.InfoS("control plane stopped", "duration", time.Since(start), "errors", len(errs))
	klog.Flush()
	if c.logs != nil {
		c.logs.close(c.klogOut)
	}
	return errors.Join(errs...)
}
