// Package ownwrites wraps the controller manager's client so that a read from its cache
// does not return an object older than this process's own last write of it.
//
// Every controller reads from the informer cache, which follows the API server's watch a
// moment behind. A reconcile that runs right after its own write (or another controller's
// in this process) found the object as it was before that write, derived the same change
// again, and wrote it on a stale resourceVersion: a conflict, a requeue, and the work done
// twice. One Evict on `ferry up` met ~8 such conflicts (VM and operation statuses).
//
// The client remembers the resourceVersion each successful write returned, by UID; Get
// then waits, looking every pollEvery and at most maxWait, for the cache to hold that
// version or a later one. Versions are compared as numbers, which holds for etcd-backed
// API servers (each is etcd's revision); a version that is not a number is never waited
// for. List is left alone: its callers judge many objects and each write is checked by
// its lock anyway.
package ownwrites

import (
	"context"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// maxWait bounds how long a Get waits for the cache: past it, the caller gets what the
	// cache has, as without this client (its write then meets the lock).
	maxWait = 250 * time.Millisecond
	// pollEvery is how often a waiting Get looks at the cache again: each look is a copy
	// of the object, and at 2 ms the waits of a 25-node drain cost the controller more CPU
	// than the conflicts they saved.
	pollEvery = 10 * time.Millisecond
	// forgetAfter is how long a write is remembered when no Get came to read it back.
	forgetAfter = time.Minute
)

// Client is a client.Client whose Get waits for the process's own writes.
type Client struct {
	client.Client
	w *writes
}

// Wrap returns c with its cached reads following the writes made through it.
func Wrap(c client.Client) *Client { return &Client{Client: c, w: &writes{m: map[types.UID]written{}}} }

type written struct {
	rv uint64
	at time.Time
}

type writes struct {
	mu        sync.Mutex
	m         map[types.UID]written
	lastSweep time.Time
	now       func() time.Time
}

func (w *writes) clock() time.Time {
	if w.now != nil {
		return w.now()
	}
	return time.Now()
}

func version(obj client.Object) (uint64, bool) {
	v, err := strconv.ParseUint(obj.GetResourceVersion(), 10, 64)
	return v, err == nil
}

// note remembers the version a successful write of obj returned.
func (w *writes) note(obj client.Object) {
	v, ok := version(obj)
	if !ok || obj.GetUID() == "" {
		return
	}
	now := w.clock()
	w.mu.Lock()
	defer w.mu.Unlock()
	if cur, ok := w.m[obj.GetUID()]; !ok || cur.rv < v {
		w.m[obj.GetUID()] = written{rv: v, at: now}
	}
	if len(w.m) > 1024 && now.Sub(w.lastSweep) > forgetAfter/4 {
		w.lastSweep = now
		for uid, e := range w.m {
			if now.Sub(e.at) > forgetAfter {
				delete(w.m, uid)
			}
		}
	}
}

// behind tells whether obj, as read, is older than the process's last write of it;
// once it is not, the write is forgotten.
func (w *writes) behind(obj client.Object) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	e, ok := w.m[obj.GetUID()]
	if !ok {
		return false
	}
	if v, ok := version(obj); ok && v < e.rv && w.clock().Sub(e.at) < forgetAfter {
		return true
	}
	delete(w.m, obj.GetUID())
	return false
}

// forget drops what is known of obj (it was deleted).
func (w *writes) forget(obj client.Object) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, obj.GetUID())
}

// Get reads obj, waiting (at most maxWait) until it is not older than this process's last
// write of it.
func (c *Client) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if err := c.Client.Get(ctx, key, obj, opts...); err != nil {
		return err
	}
	if !c.w.behind(obj) {
		return nil
	}
	deadline := time.NewTimer(maxWait)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil // what was read stands, as without waiting
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
		if err := c.Client.Get(ctx, key, obj, opts...); err != nil {
			return err
		}
		if !c.w.behind(obj) {
			return nil
		}
	}
}

// Update writes obj and remembers the version it got.
func (c *Client) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	err := c.Client.Update(ctx, obj, opts...)
	if err == nil {
		c.w.note(obj)
	}
	return err
}

// Patch writes obj and remembers the version it got.
func (c *Client) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	err := c.Client.Patch(ctx, obj, patch, opts...)
	if err == nil {
		c.w.note(obj)
	}
	return err
}

// Delete removes obj and forgets it.
func (c *Client) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	err := c.Client.Delete(ctx, obj, opts...)
	if err == nil {
		c.w.forget(obj)
	}
	return err
}

// Status is the status subresource, whose writes are remembered too.
func (c *Client) Status() client.SubResourceWriter {
	return &subWriter{SubResourceWriter: c.Client.Status(), w: c.w}
}

// SubResource is the named subresource; its updates and patches of the object itself
// (status, scale) are remembered.
func (c *Client) SubResource(name string) client.SubResourceClient {
	sc := c.Client.SubResource(name)
	return &subClient{SubResourceClient: sc, sub: subWriter{SubResourceWriter: sc, w: c.w}}
}

type subWriter struct {
	client.SubResourceWriter
	w *writes
}

func (s *subWriter) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	err := s.SubResourceWriter.Update(ctx, obj, opts...)
	if err == nil {
		s.w.note(obj)
	}
	return err
}

func (s *subWriter) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	err := s.SubResourceWriter.Patch(ctx, obj, patch, opts...)
	if err == nil {
		s.w.note(obj)
	}
	return err
}

type subClient struct {
	client.SubResourceClient
	sub subWriter
}

func (s *subClient) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	return s.sub.Update(ctx, obj, opts...)
}

func (s *subClient) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
	return s.sub.Patch(ctx, obj, patch, opts...)
}
