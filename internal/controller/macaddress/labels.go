package macaddress

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/macaddr"
)

// IndexVMMACName indexes VirtualMachines by the vmmac names they use: the one their spec
// names for the main network, and the one their status records.
const IndexVMMACName = "ferry.vmMACAddressName"

// IndexAttachedVM indexes vmmacs by status.virtualMachineName.
const IndexAttachedVM = "ferry.vmmacAttachedVM"

// IndexAddress indexes vmmacs by the lease name of spec.address: a lease's change wakes
// those waiting for its address.
const IndexAddress = "ferry.vmmacAddress"

// Index registers this package's cache indexes.
func Index(ctx context.Context, fi client.FieldIndexer) error {
	if err := fi.IndexField(ctx, &v1alpha2.VirtualMachine{}, IndexVMMACName, func(o client.Object) []string {
		vm := o.(*v1alpha2.VirtualMachine)
		var out []string
		if n := vm.MainMACAddressName(); n != "" {
			out = append(out, n)
		}
		if st := vm.MainNetworkStatus(); st != nil && st.VirtualMachineMACAddressName != "" && st.VirtualMachineMACAddressName != vm.MainMACAddressName() {
			out = append(out, st.VirtualMachineMACAddressName)
		}
		return out
	}); err != nil {
		return err
	}
	if err := fi.IndexField(ctx, &v1alpha2.VirtualMachineMACAddress{}, IndexAddress, func(o client.Object) []string {
		if a := o.(*v1alpha2.VirtualMachineMACAddress).Spec.Address; a != "" {
			return []string{macaddr.LeaseName(a)}
		}
		return nil
	}); err != nil {
		return err
	}
	return fi.IndexField(ctx, &v1alpha2.VirtualMachineMACAddress{}, IndexAttachedVM, func(o client.Object) []string {
		if n := o.(*v1alpha2.VirtualMachineMACAddress).Status.VirtualMachine; n != "" {
			return []string{n}
		}
		return nil
	})
}

// OwnerVM is the name of the VM that made mac for itself (its controller, whose UID the
// label LabelVirtualMachineUID repeats), or "".
func OwnerVM(mac *v1alpha2.VirtualMachineMACAddress) string {
	ref := metav1.GetControllerOf(mac)
	if ref == nil || ref.Kind != "VirtualMachine" || string(ref.UID) != mac.Labels[v1alpha2.LabelVirtualMachineUID] {
		return ""
	}
	return ref.Name
}

// Wants tells whether vm asks for mac: it names it (spec), records it (status), or names
// none and made it for itself, and it is not being deleted.
func Wants(vm *v1alpha2.VirtualMachine, mac *v1alpha2.VirtualMachineMACAddress) bool {
	if vm.Namespace != mac.Namespace {
		return false
	}
	if vm.MainMACAddressName() == mac.Name {
		return true
	}
	if st := vm.MainNetworkStatus(); st != nil && st.VirtualMachineMACAddressName == mac.Name {
		return true
	}
	return vm.MainMACAddressName() == "" && OwnerVM(mac) == vm.Name && string(vm.UID) == mac.Labels[v1alpha2.LabelVirtualMachineUID] && mac.DeletionTimestamp.IsZero()
}

// Wanted is the address mac asks for: spec.address in canonical form (once it parses),
// else the address it holds; "" for an Auto vmmac not bound yet.
func Wanted(mac *v1alpha2.VirtualMachineMACAddress) (string, error) {
	if mac.Spec.Address != "" {
		return macaddr.Parse(mac.Spec.Address)
	}
	return mac.Status.Address, nil
}

// HeldBy tells whether the lease names the vmmac ns/name as its holder.
func HeldBy(l *v1alpha2.VirtualMachineMACAddressLease, ns, name string) bool {
	ref := l.Spec.VirtualMachineMACAddressRef
	return ref != nil && ref.Name == name && ref.Namespace == ns
}

// uidOK: a lease that names mac by name was not made by an earlier vmmac of that name.
func uidOK(l *v1alpha2.VirtualMachineMACAddressLease, mac *v1alpha2.VirtualMachineMACAddress) bool {
	u := l.Labels[v1alpha2.LabelVirtualMachineMACAddressUID]
	return u == "" || u == string(mac.UID)
}
