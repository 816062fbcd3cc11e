package ownwrites

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// lagging is a client whose reads return the object as it was before the last write for
// the next lag reads after it, as an informer cache that has not seen the write yet.
type lagging struct {
	client.Client
	mu    sync.Mutex
	old   *corev1.ConfigMap
	lag   int
	reads int
}

func (l *lagging) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	if l.lag > 0 && l.old != nil {
		l.lag--
		l.old.DeepCopyInto(obj.(*corev1.ConfigMap))
		return nil
	}
	return l.Client.Get(ctx, key, obj, opts...)
}

// behind makes the next n reads return the object as it is now.
func (l *lagging) behind(t *testing.T, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cm := &corev1.ConfigMap{}
	if err := l.Client.Get(context.Background(), client.ObjectKey{Namespace: "ns", Name: "cm"}, cm); err != nil {
		t.Fatal(err)
	}
	l.old, l.lag, l.reads = cm, n, 0
}

func setup(t *testing.T) (*Client, *lagging) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cm", UID: "u1"}, Data: map[string]string{"a": "1"}}
	l := &lagging{Client: fake.NewClientBuilder().WithObjects(cm).WithStatusSubresource(cm).Build()}
	return Wrap(l), l
}

func TestGetWaitsForOwnWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(ctx context.Context, c *Client, cm *corev1.ConfigMap) error
	}{
		{"update", func(ctx context.Context, c *Client, cm *corev1.ConfigMap) error { return c.Update(ctx, cm) }},
		{"patch", func(ctx context.Context, c *Client, cm *corev1.ConfigMap) error {
			return c.Patch(ctx, cm, client.RawPatch("application/merge-patch+json", []byte(`{"data":{"a":"2"}}`)))
		}},
		{"status patch", func(ctx context.Context, c *Client, cm *corev1.ConfigMap) error {
			orig := cm.DeepCopy()
			cm.Labels = map[string]string{"x": "y"}
			return c.Status().Patch(ctx, cm, client.MergeFrom(orig))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c, l := setup(t)
			cm := &corev1.ConfigMap{}
			key := client.ObjectKey{Namespace: "ns", Name: "cm"}
			if err := c.Get(ctx, key, cm); err != nil {
				t.Fatal(err)
			}
			before := cm.ResourceVersion
			l.behind(t, 3)
			cm.Data["a"] = "2"
			if err := tc.write(ctx, c, cm); err != nil {
				t.Fatal(err)
			}
			wrote := cm.ResourceVersion
			if wrote == before {
				t.Fatalf("the write kept version %s", wrote)
			}
			got := &corev1.ConfigMap{}
			if err := c.Get(ctx, key, got); err != nil {
				t.Fatal(err)
			}
			if got.ResourceVersion != wrote || l.reads != 4 {
				t.Errorf("read version %s after %d reads, want %s after 4 (three stale)", got.ResourceVersion, l.reads, wrote)
			}
			// Caught up: the next read does not wait, even if the cache lags again.
			l.behind(t, 0)
			if err := c.Get(ctx, key, got); err != nil || l.reads != 1 {
				t.Errorf("a second read took %d reads (%v)", l.reads, err)
			}
		})
	}
}

// A cache that stays behind costs a read at most maxWait, then gives what it has; a
// write not made through the client is not waited for.
func TestGetWaitsAtMostMaxWait(t *testing.T) {
	ctx := context.Background()
	c, l := setup(t)
	cm := &corev1.ConfigMap{}
	key := client.ObjectKey{Namespace: "ns", Name: "cm"}
	if err := c.Get(ctx, key, cm); err != nil {
		t.Fatal(err)
	}
	l.behind(t, 1<<30)
	stale := cm.ResourceVersion
	if err := c.Update(ctx, cm); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Get(ctx, key, cm); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); cm.ResourceVersion != stale || took < maxWait || took > 10*maxWait {
		t.Errorf("read version %s (stale %s) in %s, want the stale one after %s", cm.ResourceVersion, stale, took, maxWait)
	}

	c2, l2 := setup(t)
	if err := l2.Client.Get(ctx, key, cm); err != nil {
		t.Fatal(err)
	}
	l2.behind(t, 5)
	if err := l2.Client.Update(ctx, cm); err != nil { // not through the wrapper
		t.Fatal(err)
	}
	if err := c2.Get(ctx, key, cm); err != nil || l2.reads != 1 {
		t.Errorf("waited for a write made elsewhere: %d reads (%v)", l2.reads, err)
	}
}

func TestVersionsThatAreNotNumbersAreNotWaitedFor(t *testing.T) {
	w := &writes{m: map[types.UID]written{}}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{UID: "u", ResourceVersion: "abc"}}
	w.note(cm)
	if len(w.m) != 0 || w.behind(cm) {
		t.Errorf("a version %q was remembered", cm.ResourceVersion)
	}
}

// Old writes are forgotten once many are remembered.
func TestOldWritesAreForgotten(t *testing.T) {
	now := time.Unix(1000, 0)
	w := &writes{m: map[types.UID]written{}, now: func() time.Time { return now }}
	for i := range 1100 {
		w.note(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{UID: types.UID(rune('a'+i%26)) + types.UID(time.Duration(i).String()), ResourceVersion: "5"}})
	}
	now = now.Add(2 * forgetAfter)
	w.note(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{UID: "last", ResourceVersion: "6"}})
	if len(w.m) != 1 {
		t.Errorf("%d writes remembered, want only the last", len(w.m))
	}
}
