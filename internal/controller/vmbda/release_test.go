package vmbda

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	vmctl "github.com/ferryvm/ferry/internal/controller/vm"
)

func attachment(name string) *v1alpha2.VirtualMachineBlockDeviceAttachment {
	return &v1alpha2.VirtualMachineBlockDeviceAttachment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Finalizers: []string{v1alpha2.FinalizerVMBDA}},
		Spec: v1alpha2.VirtualMachineBlockDeviceAttachmentSpec{VirtualMachineName: "m",
			BlockDeviceRef: v1alpha2.VMBDAObjectRef{Kind: v1alpha2.VMBDAKindVirtualDisk, Name: "data"}},
	}
}

// TestReleaseKeepsDiskOfAttachmentStillDetaching: an attachment that never had the disk
// (a conflicting one) finalized after the one that has it was deleted, and is still
// waiting for its detach, leaves the disk held; once that one is gone, the disk goes.
// (TestAttachmentLifecycle failed so once under load: "the disk was released before its
// detach".)
func TestReleaseKeepsDiskOfAttachmentStillDetaching(t *testing.T) {
	ctx := context.Background()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, v1alpha2.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	disk := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data"},
		Status: v1alpha2.VirtualDiskStatus{AttachedToVirtualMachines: []v1alpha2.AttachedVirtualMachine{{Name: "m"}}}}
	att, dup := attachment("att"), attachment("dup")
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(disk, att, dup).WithStatusSubresource(disk).
		WithIndex(&v1alpha2.VirtualMachineBlockDeviceAttachment{}, vmctl.IndexAttachmentVM, func(o client.Object) []string {
			return []string{o.(*v1alpha2.VirtualMachineBlockDeviceAttachment).Spec.VirtualMachineName}
		}).Build()
	r := &Reconciler{Client: c, Recorder: record.NewFakeRecorder(10)}
	for _, a := range []*v1alpha2.VirtualMachineBlockDeviceAttachment{att, dup} {
		if err := c.Delete(ctx, a); err != nil { // both stay, finalizing
			t.Fatal(err)
		}
	}
	held := func() bool {
		var d v1alpha2.VirtualDisk
		if err := c.Get(ctx, client.ObjectKeyFromObject(disk), &d); err != nil {
			t.Fatal(err)
		}
		return holderOf(&d) == "m"
	}
	var d v1alpha2.VirtualDisk
	if err := c.Get(ctx, client.ObjectKeyFromObject(disk), &d); err != nil {
		t.Fatal(err)
	}
	if err := r.release(ctx, dup, nil, &d); err != nil {
		t.Fatal(err)
	}
	if !held() {
		t.Fatal("the conflicting attachment released the disk while attachment att still waits for its detach")
	}
	// att is detached and gone: the last attachment's release lets the disk go.
	if err := c.Get(ctx, client.ObjectKeyFromObject(att), att); err != nil {
		t.Fatal(err)
	}
	att.Finalizers = nil
	if err := c.Update(ctx, att); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(disk), &d); err != nil {
		t.Fatal(err)
	}
	if err := r.release(ctx, dup, nil, &d); err != nil {
		t.Fatal(err)
	}
	if held() {
		t.Fatal("the disk is still held once no other attachment has it")
	}
}
