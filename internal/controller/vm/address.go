package vm

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/ipaddress"
)

// ensureAddress finds the VirtualMachineIPAddress (vmip) the VM uses and records its
// address once the vmip is bound and attached to the VM (package ipaddress decides
// both). The vmip is the one spec.virtualMachineIPAddressName names, or one the VM makes
// for itself and owns (named <vm>-<random>, as Deckhouse does): type Auto, or Static with
// the address of Ferry's older spec.virtualMachineIPAddress. The VM's own vmips that it no
// longer asks for are deleted while it does not run.
func (r *Reconciler) ensureAddress(ctx context.Context, s *scope) error {
	vm := s.vm
	meta.RemoveStatusCondition(&vm.Status.Conditions, v1alpha2.VMConditionIPAddressReadyLegacy)
	owned, err := r.ownAddresses(ctx, vm, r.Client)
	if err != nil {
		return err
	}
	// A running VM keeps the address it runs with (the vmip it records), whatever its spec
	// asks for now: the change takes effect when it starts again.
	if cur := vm.Status.VirtualMachineIPAddressName; cur != "" && s.running() {
		ip := &v1alpha2.VirtualMachineIPAddress{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: cur}, ip)
		if err == nil && ip.Status.Address == vm.Status.IPAddress {
			r.useAddress(s, ip)
			return nil
		}
		if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("reading VirtualMachineIPAddress %s: %w", cur, err)
		}
	}
	var ip *v1alpha2.VirtualMachineIPAddress
	if name := vm.Spec.VirtualMachineIPAddressName; name != "" {
		ip = &v1alpha2.VirtualMachineIPAddress{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: name}, ip)
		if apierrors.IsNotFound(err) {
			ip = nil
			s.addressNotReady(fmt.Sprintf("The requested VirtualMachineIPAddress %q was not found: waiting for it to appear.", name))
		} else if err != nil {
			return fmt.Errorf("reading VirtualMachineIPAddress %s: %w", name, err)
		}
	} else {
		ip = fitting(vm, owned)
		if ip == nil {
			if ip, err = r.makeAddress(ctx, vm); err != nil {
				return err
			}
			s.addressNotReady(fmt.Sprintf("VirtualMachineIPAddress %q was made for the VM: waiting for it to be bound.", ip.Name))
			ip = nil
		}
	}
	if err := r.dropAddresses(ctx, s, owned); err != nil {
		return err
	}
	if ip == nil {
		return nil
	}
	r.useAddress(s, ip)
	return nil
}

// running tells whether the VM has a launcher pod (or a migration target): its address
// must not change under it.
func (s *scope) running() bool {
	return s.active != nil || len(s.extraActive) > 0 || len(s.targets) > 0 || len(s.terminating) > 0
}

func (s *scope) addressNotReady(msg string) {
	s.ipReady, s.ipReason, s.ipMessage = false, v1alpha2.ReasonIPNotReady, msg
	if !s.running() {
		s.vm.Status.IPAddress, s.vm.Status.VirtualMachineIPAddressName = "", ""
	}
}

// useAddress records the vmip's address, or why the VM does not have it.
func (r *Reconciler) useAddress(s *scope, ip *v1alpha2.VirtualMachineIPAddress) {
	vm := s.vm
	bound := ipaddress.IsTrue(ip.Status.Conditions, v1alpha2.IPAddressConditionBound) && ip.Status.Address != ""
	switch user := ip.Status.VirtualMachine; {
	case bound && user == vm.Name && !r.inRanges(ip.Status.Address):
		// A lease made under another --ip-range: no range gives it a gateway.
		s.addressNotReady(fmt.Sprintf("VirtualMachineIPAddress %q holds %s, which is in none of the VM address ranges %s: the VM cannot start with it; use an address of those ranges (or type Auto)", ip.Name, ip.Status.Address, r.Ranges))
		s.ipReason = v1alpha2.ReasonIPUnavailable
	case bound && user == vm.Name:
		s.ipReady, s.ipReason = true, v1alpha2.ReasonIPLeased
		vm.Status.VirtualMachineIPAddressName = ip.Name
		if !s.running() || vm.Status.IPAddress == "" {
			vm.Status.IPAddress = ip.Status.Address
		}
		s.ipMessage = fmt.Sprintf("the VM holds address %s of VirtualMachineIPAddress %s", ip.Status.Address, ip.Name)
		if vm.Status.IPAddress != ip.Status.Address {
			s.ipMessage += fmt.Sprintf("; it runs with %s until it restarts", vm.Status.IPAddress)
		}
		if missing := notAssigned(s.active, vm.Status.IPAddress); missing != "" {
			// Deckhouse's NotAssigned: the guest's agent lists its addresses, and the VM's is
			// not among them. The VM holds it all the same (its pod may start again).
			s.ipNotAssigned, s.ipReason, s.ipMessage = true, v1alpha2.ReasonIPNotAssigned, missing
		}
	case user != "" && user != vm.Name:
		msg := fmt.Sprintf("The VirtualMachineIPAddress %q is attached to VirtualMachine %q: waiting for it to be released.", ip.Name, user)
		if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionIPAddressReady); c == nil || c.Message != msg {
			r.Recorder.Event(vm, corev1.EventTypeWarning, v1alpha2.ReasonIPNotReady, msg)
		}
		s.addressNotReady(msg)
	case !bound:
		c := meta.FindStatusCondition(ip.Status.Conditions, v1alpha2.IPAddressConditionBound)
		if c == nil {
			s.addressNotReady(fmt.Sprintf("The VirtualMachineIPAddress %q is not bound yet: waiting for it to be assigned.", ip.Name))
			return
		}
		switch c.Reason {
		case v1alpha2.ReasonIPAddressOutOfRange, v1alpha2.ReasonIPAddressLeaseAlreadyExists, v1alpha2.ReasonIPAddressLeaseLost:
			s.addressNotReady(fmt.Sprintf("VirtualMachineIPAddress %q: %s", ip.Name, c.Message))
			s.ipReason = v1alpha2.ReasonIPUnavailable
		default:
			s.addressNotReady(fmt.Sprintf("The VirtualMachineIPAddress %q is not bound yet: %s", ip.Name, c.Message))
		}
	default:
		s.addressNotReady(fmt.Sprintf("The VirtualMachineIPAddress %q is bound to %s: waiting for it to be attached to the VM.", ip.Name, ip.Status.Address))
	}
}

// inRanges tells whether a VM with a NIC can have addr: one of the VM address ranges
// holds it (any address does when VMs get no NIC).
func (r *Reconciler) inRanges(addr string) bool {
	if !r.Network {
		return true
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	_, ok := r.Ranges.RangeOf(a)
	return ok
}

// notAssigned says, when the guest agent of the running pod p reports the guest's
// interfaces and none of them has addr, which addresses they have ("" otherwise).
func notAssigned(p *corev1.Pod, addr string) string {
	if p == nil || p.Status.Phase != corev1.PodRunning || addr == "" {
		return ""
	}
	report, ok := guestAgent(p)
	if !ok || len(report.Interfaces) == 0 {
		return ""
	}
	var seen []string
	for _, i := range report.Interfaces {
		for _, a := range i.IPAddresses {
			if a == addr {
				return ""
			}
			seen = append(seen, i.Name+" "+a)
		}
	}
	return fmt.Sprintf("IP address (%s) is not among the addresses the guest agent reports on the guest's interfaces (%s): is the guest's network configured by DHCP?", addr, strings.Join(seen, ", "))
}

// ownAddresses lists the vmips the VM made for itself.
func (r *Reconciler) ownAddresses(ctx context.Context, vm *v1alpha2.VirtualMachine, rd client.Reader) ([]*v1alpha2.VirtualMachineIPAddress, error) {
	var list v1alpha2.VirtualMachineIPAddressList
	if err := rd.List(ctx, &list, client.InNamespace(vm.Namespace), client.MatchingLabels{v1alpha2.LabelVirtualMachineUID: string(vm.UID)}); err != nil {
		return nil, fmt.Errorf("listing the VM's VirtualMachineIPAddresses: %w", err)
	}
	var out []*v1alpha2.VirtualMachineIPAddress
	for i := range list.Items {
		if ipaddress.OwnerVM(&list.Items[i]) == vm.Name {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

// fitting is the VM's own vmip of the kind it asks for (not being deleted), if any.
func fitting(vm *v1alpha2.VirtualMachine, owned []*v1alpha2.VirtualMachineIPAddress) *v1alpha2.VirtualMachineIPAddress {
	for _, ip := range owned {
		if ip.DeletionTimestamp.IsZero() && ipaddress.Fits(vm, ip) {
			return ip
		}
	}
	return nil
}

// makeAddress makes the VM's own vmip, unless the apiserver has one the cache lacks.
func (r *Reconciler) makeAddress(ctx context.Context, vm *v1alpha2.VirtualMachine) (*v1alpha2.VirtualMachineIPAddress, error) {
	rd := r.APIReader
	if rd == nil {
		rd = r.Client
	}
	owned, err := r.ownAddresses(ctx, vm, rd)
	if err != nil {
		return nil, err
	}
	if ip := fitting(vm, owned); ip != nil {
		return ip, nil
	}
	ip := &v1alpha2.VirtualMachineIPAddress{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    vm.Name + "-",
			Namespace:       vm.Namespace,
			Labels:          map[string]string{v1alpha2.LabelVirtualMachineUID: string(vm.UID)},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1alpha2.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: v1alpha2.VirtualMachineIPAddressSpec{Type: v1alpha2.VirtualMachineIPAddressTypeAuto},
	}
	if want := vm.Spec.VirtualMachineIPAddress; want != "" {
		ip.Spec = v1alpha2.VirtualMachineIPAddressSpec{Type: v1alpha2.VirtualMachineIPAddressTypeStatic, StaticIP: want}
	}
	if err := r.Client.Create(ctx, ip); err != nil {
		return nil, fmt.Errorf("making the VM's VirtualMachineIPAddress: %w", err)
	}
	r.Recorder.Eventf(vm, corev1.EventTypeNormal, "AddressRequested", "Made VirtualMachineIPAddress %s (%s)", ip.Name, ip.Spec.Type)
	return ip, nil
}

// dropAddresses deletes the VM's own vmips that it no longer asks for (its spec names
// another, or asks for another address), while the VM does not run.
func (r *Reconciler) dropAddresses(ctx context.Context, s *scope, owned []*v1alpha2.VirtualMachineIPAddress) error {
	if s.running() {
		return nil
	}
	keep := fitting(s.vm, owned)
	if s.vm.Spec.VirtualMachineIPAddressName != "" {
		keep = nil
	}
	for _, ip := range owned {
		if ip == keep || !ip.DeletionTimestamp.IsZero() || ip.Name == s.vm.Spec.VirtualMachineIPAddressName {
			continue
		}
		if err := r.Client.Delete(ctx, ip); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting VirtualMachineIPAddress %s, which the VM no longer uses: %w", ip.Name, err)
		}
	}
	return nil
}

// releaseAddress deletes the vmips the VM made for itself (a vmip it only names stays,
// and keeps its address for the next VM that names it) and the leases of Ferry's earlier
// releases that it still holds.
func (r *Reconciler) releaseAddress(ctx context.Context, vm *v1alpha2.VirtualMachine) error {
	owned, err := r.ownAddresses(ctx, vm, r.Client)
	if err != nil {
		return err
	}
	for _, ip := range owned {
		if err := r.Client.Delete(ctx, ip); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("releasing the VM's VirtualMachineIPAddress %s: %w", ip.Name, err)
		}
	}
	err = r.Client.DeleteAllOf(ctx, &v1alpha2.VirtualMachineIPAddressLease{}, client.MatchingLabels{v1alpha2.LabelLegacyLeaseHolder: string(vm.UID)})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("releasing the VM's address lease of an earlier release: %w", err)
	}
	return nil
}

// vmsOfAddress: the VMs a vmip concerns: its user, its maker, and those that name it.
func (r *Reconciler) vmsOfAddress(ctx context.Context, o client.Object) []reconcile.Request {
	ip := o.(*v1alpha2.VirtualMachineIPAddress)
	seen := map[string]bool{}
	for _, n := range []string{ip.Status.VirtualMachine, ipaddress.OwnerVM(ip)} {
		if n != "" {
			seen[n] = true
		}
	}
	var list v1alpha2.VirtualMachineList
	if r.Client.List(ctx, &list, client.InNamespace(ip.Namespace), client.MatchingFields{ipaddress.IndexVMAddressName: ip.Name}) == nil {
		for _, vm := range list.Items {
			seen[vm.Name] = true
		}
	}
	var out []reconcile.Request
	for n := range seen {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ip.Namespace, Name: n}})
	}
	return out
}
