package ipaddress

import (
	"context"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// IndexVMAddressName indexes VirtualMachines by the vmip names they use: spec and status
// virtualMachineIPAddressName.
const IndexVMAddressName = "ferry.vmAddressName"

// IndexAttachedVM indexes vmips by status.virtualMachineName.
const IndexAttachedVM = "ferry.vmipAttachedVM"

// IndexStaticIP indexes vmips by spec.staticIP: a lease's change wakes those waiting for
// its address.
const IndexStaticIP = "ferry.vmipStaticIP"

// Index registers this package's cache indexes.
func Index(ctx context.Context, fi client.FieldIndexer) error {
	if err := fi.IndexField(ctx, &v1alpha2.VirtualMachine{}, IndexVMAddressName, func(o client.Object) []string {
		vm := o.(*v1alpha2.VirtualMachine)
		var out []string
		if n := vm.Spec.VirtualMachineIPAddressName; n != "" {
			out = append(out, n)
		}
		if n := vm.Status.VirtualMachineIPAddressName; n != "" && n != vm.Spec.VirtualMachineIPAddressName {
			out = append(out, n)
		}
		return out
	}); err != nil {
		return err
	}
	if err := fi.IndexField(ctx, &v1alpha2.VirtualMachineIPAddress{}, IndexStaticIP, func(o client.Object) []string {
		if a := o.(*v1alpha2.VirtualMachineIPAddress).Spec.StaticIP; a != "" {
			return []string{a}
		}
		return nil
	}); err != nil {
		return err
	}
	return fi.IndexField(ctx, &v1alpha2.VirtualMachineIPAddress{}, IndexAttachedVM, func(o client.Object) []string {
		if n := o.(*v1alpha2.VirtualMachineIPAddress).Status.VirtualMachine; n != "" {
			return []string{n}
		}
		return nil
	})
}

// IsTrue tells whether the condition t of conds is True.
func IsTrue(conds []metav1.Condition, t string) bool {
	return meta.IsStatusConditionTrue(conds, t)
}

// OwnerVM is the name of the VM that made ip for itself (its controller, whose UID the
// label LabelVirtualMachineUID repeats), or "".
func OwnerVM(ip *v1alpha2.VirtualMachineIPAddress) string {
	ref := metav1.GetControllerOf(ip)
	if ref == nil || ref.Kind != "VirtualMachine" || string(ref.UID) != ip.Labels[v1alpha2.LabelVirtualMachineUID] {
		return ""
	}
	return ref.Name
}

// Wants tells whether vm asks for ip: it names it (spec), has its address (status), or
// made it for itself and it is of the kind the VM asks for (Auto, or Static with the
// address of the VM's Ferry-only spec.virtualMachineIPAddress) and not being deleted.
func Wants(vm *v1alpha2.VirtualMachine, ip *v1alpha2.VirtualMachineIPAddress) bool {
	if vm.Namespace != ip.Namespace {
		return false
	}
	if vm.Spec.VirtualMachineIPAddressName == ip.Name || vm.Status.VirtualMachineIPAddressName == ip.Name {
		return true
	}
	if vm.Spec.VirtualMachineIPAddressName != "" || OwnerVM(ip) != vm.Name || string(vm.UID) != ip.Labels[v1alpha2.LabelVirtualMachineUID] || !ip.DeletionTimestamp.IsZero() {
		return false
	}
	return Fits(vm, ip)
}

// Fits tells whether ip, made by vm for itself, is of the kind vm asks for.
func Fits(vm *v1alpha2.VirtualMachine, ip *v1alpha2.VirtualMachineIPAddress) bool {
	if want := vm.Spec.VirtualMachineIPAddress; want != "" {
		return ip.Spec.Type == v1alpha2.VirtualMachineIPAddressTypeStatic && ip.Spec.StaticIP == want
	}
	return ip.Spec.Type == v1alpha2.VirtualMachineIPAddressTypeAuto
}
