package kubelet

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// TestRemovedPodWithEndedProcessIsForgotten: a pod gone from the API whose launcher has
// ended (a migration's source, removed by the controller) is forgotten at its next sync,
// and nothing wakes the agent for it again. Before, every sync stopped the process again,
// whose stop woke the next sync: one spinning loop per such pod (half a core of a node's
// agent after a few migrations, seen in the e2e run).
func TestRemovedPodWithEndedProcessIsForgotten(t *testing.T) {
	uid := types.UID("gone")
	k := &Kubelet{
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[types.UID]()),
		pods:  cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{"uid": func(any) ([]string, error) { return nil, nil }}),
		procs: map[types.UID]*process{},
		keys:  map[types.UID]string{uid: "default/virt-launcher-a"},
	}
	t.Cleanup(k.queue.ShutDown)
	done := make(chan struct{})
	close(done)
	k.procs[uid] = &process{uid: uid, done: done}

	if err := k.sync(t.Context(), uid); err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	_, kept := k.procs[uid]
	_, named := k.keys[uid]
	k.mu.Unlock()
	if kept || named {
		t.Errorf("the removed pod's ended process is still kept (procs %v, keys %v)", kept, named)
	}
	if n := k.queue.Len(); n != 0 {
		t.Errorf("the sync queued %d more syncs of a pod that is gone", n)
	}
}
