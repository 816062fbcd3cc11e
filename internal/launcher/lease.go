package launcher

// The disk lease of a running instance: held, renewed, handed over at a migration, and
// the fencing of this instance when a newer one takes it.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferryvm/ferry/internal/disklease"
)

// takeOverLease passes the disk lease to this migration target once the guest
// runs here: same token, new holder. Until it succeeds the source's lease
// stands (the source stops renewing when it sees the handover).
func (l *launcher) takeOverLease(ctx context.Context) {
	if l.leasePath == "" || l.fence == nil {
		return
	}
	retry := cmp.Or(l.o.LeaseTTL, disklease.DefaultTTL) / 3
	for failures := 0; ; failures++ {
		lease, err := disklease.TakeOver(l.leasePath, l.o.FencingToken, leaseHolder(l.o), leaseNode(), l.o.LeaseTTL)
		var newer *disklease.SupersededError
		switch {
		case errors.As(err, &newer):
			l.fence.fence(fmt.Sprintf("killed after the incoming migration: %v; this instance was fenced", err))
			return
		case err == nil:
			l.log.printf("disk lease %s taken over with token %d", l.leasePath, l.o.FencingToken)
			l.fence.start(ctx, lease)
			return
		case failures == 0:
			l.log.printf("could not take over the disk lease yet, retrying every %v: %v", retry, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-l.vm.Done():
			return
		case <-time.After(retry):
		}
	}
}

// fencing keeps this instance's disk lease from the moment it is held until
// the launcher ends, and kills QEMU at once when a newer instance took it;
// loop then returns ExitSuperseded.
type fencing struct {
	log *logger

	mu     sync.Mutex
	lease  *disklease.Lease
	vm     interface{ Kill() } // QEMU, once started
	reason string              // why this instance was fenced; "" while it was not
}

// start holds lease and renews it every TTL/3 until ctx ends.
func (f *fencing) start(ctx context.Context, lease *disklease.Lease) {
	f.mu.Lock()
	f.lease = lease
	f.mu.Unlock()
	go f.renew(ctx, lease)
}

// renew ends when the lease passes on. A lease it cannot read (storage
// unreachable) is only logged and QEMU keeps running: killing every VM of a
// node on a storage hiccup would be worse, QEMU cannot write a disk it cannot
// reach either, and cutting off a node for good is the watchdog's job.
func (f *fencing) renew(ctx context.Context, lease *disklease.Lease) {
	t := time.NewTicker(lease.TTL() / 3)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := lease.Renew()
		switch {
		case errors.Is(err, disklease.ErrReleased):
			return
		case err != nil:
			if !failing {
				f.log.printf("could not renew the disk lease; the VM keeps running: %v", err)
			}
			failing = true
		case st == disklease.Superseded:
			newer := &disklease.SupersededError{Path: lease.Path(), Token: lease.Token(), Current: lease.Current()}
			f.fence(fmt.Sprintf("killed: %v; this instance was fenced", newer))
			return
		case st == disklease.HandedOver:
			cur := lease.Current()
			f.log.printf("disk lease %s handed over to %s on node %s; stopped renewing", lease.Path(), cur.Holder, cur.Node)
			return
		case failing:
			f.log.printf("disk lease %s renewed again", lease.Path())
			failing = false
		}
	}
}

// fence records why this instance must stop (Run logs it on the way out) and
// kills QEMU: SIGKILL, no grace, the newer instance may start any moment.
func (f *fencing) fence(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reason = reason
	if f.vm != nil {
		f.vm.Kill()
	}
}

// attach hands fencing the started QEMU. It reports false, killing v, if the
// instance was fenced while QEMU started.
func (f *fencing) attach(v interface{ Kill() }) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vm = v
	if f.reason != "" {
		v.Kill()
		return false
	}
	return true
}

// fencedBy says why this instance was fenced; "" if it was not (or runs
// without a lease).
func (f *fencing) fencedBy() string {
	if f == nil {
		return ""
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reason
}

// release frees the lease if it is still ours; call it once QEMU is gone.
func (f *fencing) release() {
	f.mu.Lock()
	lease := f.lease
	f.mu.Unlock()
	if lease == nil {
		return
	}
	if err := lease.Release(); err != nil {
		f.log.printf("could not release the disk lease: %v", err)
	}
}
