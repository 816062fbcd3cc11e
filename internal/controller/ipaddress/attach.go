package ipaddress

import (
	"context"
	"fmt"
	"sort"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// user returns the VM that uses ip, or "". The VM recorded as its user keeps it while it
// exists and still asks for it, being deleted too (its launcher pods are gone only when
// it is: until then its guest may answer at the address). Otherwise the first to ask for
// it takes it: a VM that records it as its address, then the VM that made it, then the
// oldest VM that names it.
func (r *Reconciler) user(ctx context.Context, ip *v1alpha2.VirtualMachineIPAddress) (string, error) {
	var list v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &list, client.InNamespace(ip.Namespace), client.MatchingFields{IndexVMAddressName: ip.Name}); err != nil {
		return "", fmt.Errorf("listing the VMs that name %s: %w", ip.Name, err)
	}
	var cands []*v1alpha2.VirtualMachine
	for i := range list.Items {
		cands = append(cands, &list.Items[i])
	}
	for _, name := range []string{OwnerVM(ip), ip.Status.VirtualMachine} {
		if name == "" || containsVM(cands, name) {
			continue
		}
		var vm v1alpha2.VirtualMachine
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: ip.Namespace, Name: name}, &vm)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return "", err
		}
		cands = append(cands, &vm)
	}
	cands = filterVMs(cands, func(vm *v1alpha2.VirtualMachine) bool { return Wants(vm, ip) })
	return Choose(ip, cands), nil
}

// Choose picks the user of ip among the VMs that ask for it (see user).
func Choose(ip *v1alpha2.VirtualMachineIPAddress, cands []*v1alpha2.VirtualMachine) string {
	if len(cands) == 0 {
		return ""
	}
	if containsVM(cands, ip.Status.VirtualMachine) {
		return ip.Status.VirtualMachine
	}
	rank := func(vm *v1alpha2.VirtualMachine) int {
		switch {
		case vm.Status.VirtualMachineIPAddressName == ip.Name:
			return 0
		case OwnerVM(ip) == vm.Name:
			return 1
		}
		return 2
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i], cands[j]
		if rank(a) != rank(b) {
			return rank(a) < rank(b)
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	return cands[0].Name
}

func containsVM(vms []*v1alpha2.VirtualMachine, name string) bool {
	for _, vm := range vms {
		if vm.Name == name {
			return true
		}
	}
	return false
}

func filterVMs(vms []*v1alpha2.VirtualMachine, keep func(*v1alpha2.VirtualMachine) bool) []*v1alpha2.VirtualMachine {
	var out []*v1alpha2.VirtualMachine
	for _, vm := range vms {
		if keep(vm) {
			out = append(out, vm)
		}
	}
	return out
}
