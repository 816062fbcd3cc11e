package migration

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/testenv"
)

// TestVMStateWriteRedoneOnConflict (issue 19): the migration controller writes the VM's
// migration state from a copy of the VM it read earlier. When another writer changed the
// VM in between, a plain merge patch against that copy lost an update: here the other
// writer closed an earlier migration (endTimestamp, result) that the copy did not know of,
// and the new migration's state kept that endTimestamp, so the VM would show the migration
// ended before it began. The write must now fail with a conflict and be made again on
// the VM as it is: the other writer's condition stays, the new state is exactly the one
// opened.
func TestVMStateWriteRedoneOnConflict(t *testing.T) {
	env, cfg, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha2.AddToScheme(scheme)
	api, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := api.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	vm := &v1alpha2.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: "m", Namespace: ns.Name},
		Spec: v1alpha2.VirtualMachineSpec{
			RunPolicy: v1alpha2.AlwaysOn,
			CPU:       v1alpha2.CPUSpec{Cores: 1},
			Memory:    v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
			// Never read here: the VM is only written to.
			BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: "d"}},
		},
	}
	if err := api.Create(ctx, vm); err != nil {
		t.Fatal(err)
	}
	vm.Status.Phase, vm.Status.NodeName = v1alpha2.MachineRunning, "a"
	if err := api.Status().Update(ctx, vm); err != nil {
		t.Fatal(err)
	}
	stale := vm.DeepCopy() // what the migration controller read: no migration state

	// Another writer, after that read: an earlier migration closed, a condition set.
	t0, t1 := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second)), metav1.NewTime(time.Now().Add(-30*time.Second).Truncate(time.Second))
	vm.Status.MigrationState = &v1alpha2.MigrationState{StartTimestamp: &t0, EndTimestamp: &t1, Result: v1alpha2.MigrationFailed,
		Source: v1alpha2.MigrationEndpoint{Node: "a", Pod: "p-old"}, Target: v1alpha2.MigrationEndpoint{Pod: "p-old-target"}}
	meta.SetStatusCondition(&vm.Status.Conditions, metav1.Condition{Type: v1alpha2.VMConditionMigratable, Status: metav1.ConditionTrue,
		Reason: "Migratable", Message: "set by another writer"})
	if err := api.Status().Update(ctx, vm); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var writes []error
	recording := interceptor.NewClient(api, interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			err := c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			if _, isVM := obj.(*v1alpha2.VirtualMachine); isVM && sub == "status" {
				mu.Lock()
				writes = append(writes, err)
				mu.Unlock()
			}
			return err
		},
	})
	r := &Reconciler{Client: recording, APIReader: api}

	t2 := metav1.NewTime(time.Now().Truncate(time.Second))
	opened := v1alpha2.MigrationState{StartTimestamp: &t2,
		Source: v1alpha2.MigrationEndpoint{Node: "a", Pod: "p"}, Target: v1alpha2.MigrationEndpoint{Pod: "p-target"}}
	if err := r.patchVMState(ctx, stale, func(st *v1alpha2.MigrationState) { *st = opened }); err != nil {
		t.Fatalf("patchVMState: %v", err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 2 || !apierrors.IsConflict(writes[0]) || writes[1] != nil {
		t.Errorf("want a conflict on the stale copy, then a write that succeeds; got %v", writes)
	}
	got := &v1alpha2.VirtualMachine{}
	if err := api.Get(ctx, client.ObjectKeyFromObject(vm), got); err != nil {
		t.Fatal(err)
	}
	for what, v := range map[string]*v1alpha2.VirtualMachine{"the server's VM": got, "the controller's copy": stale} {
		st := v.Status.MigrationState
		if st == nil || st.EndTimestamp != nil || st.Result != "" || !st.StartTimestamp.Equal(&t2) || st.Source != opened.Source || st.Target != opened.Target {
			t.Errorf("%s: migration state %+v, want exactly the one opened %+v", what, st, opened)
		}
		if c := meta.FindStatusCondition(v.Status.Conditions, v1alpha2.VMConditionMigratable); c == nil || c.Message != "set by another writer" {
			t.Errorf("%s: the other writer's condition is lost: %+v", what, v.Status.Conditions)
		}
		if v.Status.Phase != v1alpha2.MachineRunning || v.Status.NodeName != "a" {
			t.Errorf("%s: phase %q on node %q, want Running on a", what, v.Status.Phase, v.Status.NodeName)
		}
	}
}
