// Package uninstall removes Ferry from a cluster with its objects in it. Deleting a
// CustomResourceDefinition deletes every object of its kind, and each waits for the
// finalizers Ferry put on it (virtualization.ferryvm.io/vm, /storage, /migration, /vmip).
// `kubectl delete -k deploy/base` deletes the controller, its RBAC and the CRDs at once:
// no one is left to remove the finalizers, and the CRDs stay Terminating for ever (and
// kubectl, which waits for them, with them).
//
// So Ferry's objects go first, while the controller runs (Clean, `ferry uninstall`): the
// VMs and their operations are deleted and finalized as usual (launcher pods stopped,
// addresses released); then Ferry's CRDs are deleted, and the controllers release the
// disks and images left without their usual clean-up, keeping their files in the shared
// storage (Terminating: an uninstall does not destroy data unless asked to). Then
// `kubectl delete -k deploy/base` finds no object to wait for. When the controller is gone
// already (kubectl came first), Clean with Force removes Ferry's finalizers itself.
package uninstall

import (
	"context"
	"fmt"
	"k8s.io/apimachinery/pkg/api/meta"
	"slices"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// The CRDs whose objects carry Ferry's finalizers.
const (
	CRDVirtualMachines = "virtualmachines.virtualization.deckhouse.io"
	CRDOperations      = "virtualmachineoperations.virtualization.deckhouse.io"
	CRDDisks           = "virtualdisks.virtualization.deckhouse.io"
	CRDImages          = "clustervirtualimages.virtualization.deckhouse.io"
	CRDVirtualImages   = "virtualimages.virtualization.deckhouse.io"
	CRDClasses         = "virtualmachineclasses.virtualization.deckhouse.io"
	CRDIPAddresses     = "virtualmachineipaddresses.virtualization.deckhouse.io"
	CRDMACAddresses    = "virtualmachinemacaddresses.virtualization.deckhouse.io"
	CRDAttachments     = "virtualmachineblockdeviceattachments.virtualization.deckhouse.io"
	CRDSnapshots       = "virtualdisksnapshots.virtualization.deckhouse.io"
)

// The USB device kinds, whose objects carry no finalizer (a NodeUSBDevice's USBDevice
// is deleted by the controller when it goes, and by the garbage collector where that
// runs): Clean only deletes their CRDs.
const (
	CRDUSBDevices     = "usbdevices.virtualization.deckhouse.io"
	CRDNodeUSBDevices = "nodeusbdevices.virtualization.deckhouse.io"
)

// FinalizerMigration keeps a migration's VirtualMachineOperation until its target pod
// is gone (package migration).
const FinalizerMigration = "virtualization.ferryvm.io/migration"

const (
	crdKind              = "CustomResourceDefinition"
	crdGroupVersionGroup = "apiextensions.k8s.io"
)

// Finalizers are every finalizer Ferry sets.
var Finalizers = []string{v1alpha2.FinalizerVM, v1alpha2.FinalizerStorage, v1alpha2.FinalizerIPLease, FinalizerMigration, v1alpha2.FinalizerVMClass, v1alpha2.FinalizerIPAddress, v1alpha2.FinalizerVMBDA, v1alpha2.FinalizerMACAddress}

// kinds are the lists of the objects that carry them, by CRD.
var kinds = []struct {
	crd  string
	list func() client.ObjectList
}{
	{CRDVirtualMachines, func() client.ObjectList { return &v1alpha2.VirtualMachineList{} }},
	{CRDOperations, func() client.ObjectList { return &v1alpha2.VirtualMachineOperationList{} }},
	{CRDDisks, func() client.ObjectList { return &v1alpha2.VirtualDiskList{} }},
	{CRDImages, func() client.ObjectList { return &v1alpha2.ClusterVirtualImageList{} }},
	{CRDVirtualImages, func() client.ObjectList { return &v1alpha2.VirtualImageList{} }},
	{CRDClasses, func() client.ObjectList { return &v1alpha2.VirtualMachineClassList{} }},
	{CRDIPAddresses, func() client.ObjectList { return &v1alpha2.VirtualMachineIPAddressList{} }},
	{CRDMACAddresses, func() client.ObjectList { return &v1alpha2.VirtualMachineMACAddressList{} }},
	{CRDSnapshots, func() client.ObjectList { return &v1alpha2.VirtualDiskSnapshotList{} }},
	// Attachments go with their CRD: the controller releases them at once (or Force).
	{CRDAttachments, func() client.ObjectList { return &v1alpha2.VirtualMachineBlockDeviceAttachmentList{} }},
}

// Terminating tells whether the CRD named crd is being deleted, read past the cache (a
// metadata-only get: the controller may read Ferry's CRDs by name, nothing else of
// them). A CRD that cannot be read counts as not being deleted: the object is then
// finalized as usual.
func Terminating(ctx context.Context, r client.Reader, crd string) bool {
	if r == nil {
		return false
	}
	m := crdMeta(crd)
	if err := r.Get(ctx, client.ObjectKey{Name: crd}, m); err != nil {
		return false
	}
	return !m.DeletionTimestamp.IsZero()
}

// Release removes Ferry's finalizers from obj (whose CRD is being deleted) with an update.
func Release(ctx context.Context, c client.Client, obj client.Object) error {
	kept := slices.DeleteFunc(slices.Clone(obj.GetFinalizers()), func(f string) bool { return slices.Contains(Finalizers, f) })
	if len(kept) == len(obj.GetFinalizers()) {
		return nil
	}
	obj.SetFinalizers(kept)
	return client.IgnoreNotFound(c.Update(ctx, obj))
}

// metaObjects are the items of a typed list, as client objects (every kind of the list
// kinds, whichever Ferry adds).
func metaObjects(list client.ObjectList) ([]client.Object, error) {
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil, fmt.Errorf("items of %T: %w", list, err)
	}
	out := make([]client.Object, 0, len(items))
	for _, it := range items {
		o, ok := it.(client.Object)
		if !ok {
			return nil, fmt.Errorf("unknown item %T in %T", it, list)
		}
		out = append(out, o)
	}
	return out, nil
}
