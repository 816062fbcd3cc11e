package migration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func pendingOp(i int) *v1alpha2.VirtualMachineOperation {
	return &v1alpha2.VirtualMachineOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("ev-%d", i), UID: types.UID(fmt.Sprintf("uid-%d", i))},
		Spec:       v1alpha2.VirtualMachineOperationSpec{Type: v1alpha2.OpEvict, VirtualMachineName: fmt.Sprintf("vm-%d", i)},
		Status: v1alpha2.VirtualMachineOperationStatus{Phase: v1alpha2.OpPending,
			Migration: &v1alpha2.OperationMigrationStatus{Phase: v1alpha2.MigrationPending}},
	}
}

// TestSlotsHoldUnderConcurrentReconciles: operations step in parallel and read a cache that
// shows another operation's slot only after its status write lands. Eight operations of one
// source node asking at once, with one outbound slot per node, get exactly one slot; the
// others get it only after the holder ends.
func TestSlotsHoldUnderConcurrentReconciles(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha2.AddToScheme(s)
	var ops []*v1alpha2.VirtualMachineOperation
	var objs []client.Object
	for i := range 8 {
		ops = append(ops, pendingOp(i))
		objs = append(objs, ops[i])
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).WithStatusSubresource(objs...).Build()
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := &Reconciler{Client: c, Config: DefaultConfig(), Now: func() time.Time { return now }}
	ctx := context.Background()

	take := func() []int {
		var mu sync.Mutex
		var got []int
		var wg sync.WaitGroup
		for i, op := range ops {
			wg.Go(func() {
				why, err := r.takeSlot(ctx, op, "a")
				if err != nil {
					t.Error(err)
				}
				if why == "" {
					mu.Lock()
					got = append(got, i)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return got
	}
	got := take()
	if len(got) != 1 {
		t.Fatalf("%d operations took the one outbound slot of node a: %v", len(got), got)
	}
	holder := got[0]
	// Asked again before the holder's status is written (the cache lags): still one slot,
	// and it is the holder's.
	if again := take(); len(again) != 1 || again[0] != holder {
		t.Fatalf("asked again before the status landed: slots went to %v, want only %d", again, holder)
	}

	// The holder's status lands: the cache now says what the grant said.
	h := ops[holder]
	h.Status.Migration.Phase, h.Status.Migration.SourceNode = v1alpha2.MigrationScheduling, "a"
	if err := c.Status().Update(ctx, h); err != nil {
		t.Fatal(err)
	}
	others := append(append([]*v1alpha2.VirtualMachineOperation{}, ops[:holder]...), ops[holder+1:]...)
	for _, op := range others {
		if why, _ := r.takeSlot(ctx, op, "a"); why == "" {
			t.Fatalf("%s took a slot while %s migrates from the same node", op.Name, h.Name)
		}
	}
	// Another node's slot is free meanwhile.
	if why, _ := r.takeSlot(ctx, others[0], "b"); why != "" {
		t.Fatalf("node b's slot: %s", why)
	}
	r.slots.drop(others[0].UID)

	// The holder ends: one of the others takes the slot.
	h.Status.Phase = v1alpha2.OpCompleted
	h.Status.Migration.Phase = v1alpha2.MigrationDone
	if err := c.Status().Update(ctx, h); err != nil {
		t.Fatal(err)
	}
	ops = others
	if got := take(); len(got) != 1 {
		t.Fatalf("after the holder ended, %d operations took the slot", len(got))
	}
}

// TestUnusedGrantExpires: a slot granted to a pass whose status write never lands is free
// again after grantTTL.
func TestUnusedGrantExpires(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha2.AddToScheme(s)
	a, b := pendingOp(0), pendingOp(1)
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(a, b).Build()
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := &Reconciler{Client: c, Config: DefaultConfig(), Now: func() time.Time { return now }}
	ctx := context.Background()
	if why, _ := r.takeSlot(ctx, a, "n"); why != "" {
		t.Fatal(why)
	}
	if why, _ := r.takeSlot(ctx, b, "n"); why == "" {
		t.Fatal("b took the slot a was granted")
	}
	now = now.Add(grantTTL + time.Second)
	if why, _ := r.takeSlot(ctx, b, "n"); why != "" {
		t.Fatalf("a's grant did not expire: %s", why)
	}
}

// TestEndOfMigrationWakesItsNodesWaiters: the operations waiting for the slot a migration
// held are woken when it ends, not the ones of other nodes.
func TestEndOfMigrationWakesItsNodesWaiters(t *testing.T) {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = v1alpha2.AddToScheme(s)
	done := pendingOp(0)
	done.Status.Phase = v1alpha2.OpCompleted
	done.Status.Migration = &v1alpha2.OperationMigrationStatus{Phase: v1alpha2.MigrationDone, SourceNode: "a"}
	sameNode, otherNode, unknown := pendingOp(1), pendingOp(2), pendingOp(3)
	sameNode.Status.Migration.SourceNode, otherNode.Status.Migration.SourceNode = "a", "b"
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(done, sameNode, otherNode, unknown).Build()
	r := &Reconciler{Client: c, Config: DefaultConfig(), Now: time.Now}
	got := r.waitersOf(context.Background(), done)
	if len(got) != 1 || got[0].Name != sameNode.Name {
		t.Fatalf("woke %v, want only %s", got, sameNode.Name)
	}
	if got := r.waitersOf(context.Background(), sameNode); len(got) != 0 {
		t.Fatalf("a waiting operation woke %v", got)
	}
}
