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
	"github.com/ferryvm/ferry/internal/controller/macaddress"
	"github.com/ferryvm/ferry/internal/vmnet"
)

// ensureMAC finds the VirtualMachineMACAddress (vmmac) of the VM's main interface and
// records its address in status.networks once the vmmac is bound and attached to the VM
// (package macaddress decides both). The vmmac is the one spec.networks names for the
// main network, or one the VM makes for itself and owns (named <vm>-<random>, as
// Deckhouse does). A running VM keeps the MAC it runs with: its launcher pods carry it
// (a migration target copies its source's arguments), and a change takes effect when it
// starts again.
func (r *Reconciler) ensureMAC(ctx context.Context, s *scope) error {
	vm := s.vm
	owned, err := r.ownMACs(ctx, vm, r.Client)
	if err != nil {
		return err
	}
	// A running VM keeps the vmmac it runs with, whatever its spec names now (the change
	// awaits a restart, addressChanges): that vmmac stays attached to it, so its lease is
	// not freed under the NIC.
	if st := vm.MainNetworkStatus(); st != nil && st.VirtualMachineMACAddressName != "" && s.running() {
		cur := &v1alpha2.VirtualMachineMACAddress{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: st.VirtualMachineMACAddressName}, cur)
		if err == nil && strings.EqualFold(cur.Status.Address, s.runningMAC()) {
			r.useMAC(s, cur)
			return nil
		}
		if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("reading VirtualMachineMACAddress %s: %w", st.VirtualMachineMACAddressName, err)
		}
	}
	var mac *v1alpha2.VirtualMachineMACAddress
	if name := vm.MainMACAddressName(); name != "" {
		mac = &v1alpha2.VirtualMachineMACAddress{}
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: name}, mac)
		if apierrors.IsNotFound(err) {
			mac = nil
			s.macNotReady(v1alpha2.ReasonMACNotReady, fmt.Sprintf("The requested VirtualMachineMACAddress %q was not found: waiting for it to appear.", name))
		} else if err != nil {
			return fmt.Errorf("reading VirtualMachineMACAddress %s: %w", name, err)
		}
	} else if mac = fittingMAC(owned); mac == nil {
		if mac, err = r.makeMAC(ctx, vm, s.runningMAC()); err != nil {
			return err
		}
		s.macNotReady(v1alpha2.ReasonMACNotReady, fmt.Sprintf("VirtualMachineMACAddress %q was made for the VM: waiting for it to be bound.", mac.Name))
		mac = nil
	}
	if err := r.dropMACs(ctx, s, owned); err != nil {
		return err
	}
	if mac != nil {
		r.useMAC(s, mac)
	}
	if runs := s.runningMAC(); runs != "" {
		st := mainNetwork(vm)
		st.MACAddress = runs
		if s.macReady && !strings.EqualFold(runs, macOf(mac)) {
			s.macMessage += fmt.Sprintf("; the VM runs with %s until it restarts", runs)
		}
	}
	return nil
}

// runningMAC is the MAC the VM's live launcher pod gives its NIC: its --mac, or, for a
// pod of a release before VirtualMachineMACAddress, the one its launcher derived from
// --ip (vmnet.GuestMAC). "" when no pod runs the VM with a NIC.
func (s *scope) runningMAC() string {
	pods := append(append([]*corev1.Pod{s.active}, s.extraActive...), s.targets...)
	for _, p := range append(pods, s.terminating...) {
		if p == nil || len(p.Spec.Containers) == 0 {
			continue
		}
		args := p.Spec.Containers[0].Args
		if m := argValue(args, "--mac"); m != "" {
			return m
		}
		if ip := argValue(args, "--ip"); ip != "" {
			if pfx, err := netip.ParsePrefix(ip); err == nil {
				return vmnet.GuestMAC(pfx.Addr()).String()
			}
		}
	}
	return ""
}

func argValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

func macOf(m *v1alpha2.VirtualMachineMACAddress) string {
	if m == nil {
		return ""
	}
	return m.Status.Address
}

// mainNetwork is the VM's status entry of its main interface, made if need be.
func mainNetwork(vm *v1alpha2.VirtualMachine) *v1alpha2.NetworksStatus {
	if st := vm.MainNetworkStatus(); st != nil {
		return st
	}
	vm.Status.Networks = append(vm.Status.Networks, v1alpha2.NetworksStatus{Type: string(v1alpha2.NetworkTypeMain)})
	return &vm.Status.Networks[len(vm.Status.Networks)-1]
}

func (s *scope) macNotReady(reason, msg string) {
	s.macReady, s.macReason, s.macMessage = false, reason, msg
	if !s.running() {
		s.vm.Status.Networks = nil
	}
}

// useMAC records the vmmac's address, or why the VM does not have it.
func (r *Reconciler) useMAC(s *scope, mac *v1alpha2.VirtualMachineMACAddress) {
	vm := s.vm
	bound := meta.IsStatusConditionTrue(mac.Status.Conditions, v1alpha2.MACAddressConditionBound) && mac.Status.Address != ""
	switch user := mac.Status.VirtualMachine; {
	case bound && user == vm.Name:
		s.macReady, s.macReason = true, v1alpha2.ReasonMACReady
		s.macMessage = fmt.Sprintf("the VM's NIC has MAC address %s of VirtualMachineMACAddress %s", mac.Status.Address, mac.Name)
		st := mainNetwork(vm)
		st.MACAddress, st.VirtualMachineMACAddressName = mac.Status.Address, mac.Name
	case user != "" && user != vm.Name:
		msg := fmt.Sprintf("The VirtualMachineMACAddress %q is attached to VirtualMachine %q: waiting for it to be released.", mac.Name, user)
		if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionMACAddressReady); c == nil || c.Message != msg {
			r.Recorder.Event(vm, corev1.EventTypeWarning, v1alpha2.ReasonMACNotReady, msg)
		}
		s.macNotReady(v1alpha2.ReasonMACNotReady, msg)
	case !bound:
		c := meta.FindStatusCondition(mac.Status.Conditions, v1alpha2.MACAddressConditionBound)
		switch {
		case c == nil:
			s.macNotReady(v1alpha2.ReasonMACNotReady, fmt.Sprintf("The VirtualMachineMACAddress %q is not bound yet: waiting for it to be assigned.", mac.Name))
		case c.Reason == v1alpha2.ReasonMACAddressLeaseAlreadyExists || c.Reason == v1alpha2.ReasonMACAddressLeaseLost:
			s.macNotReady(v1alpha2.ReasonMACNotAvailable, fmt.Sprintf("VirtualMachineMACAddress %q: %s", mac.Name, c.Message))
		default:
			s.macNotReady(v1alpha2.ReasonMACNotReady, fmt.Sprintf("The VirtualMachineMACAddress %q is not bound yet: %s", mac.Name, c.Message))
		}
	default:
		s.macNotReady(v1alpha2.ReasonMACNotReady, fmt.Sprintf("The VirtualMachineMACAddress %q is bound to %s: waiting for it to be attached to the VM.", mac.Name, mac.Status.Address))
	}
}

// ownMACs lists the vmmacs the VM made for itself.
func (r *Reconciler) ownMACs(ctx context.Context, vm *v1alpha2.VirtualMachine, rd client.Reader) ([]*v1alpha2.VirtualMachineMACAddress, error) {
	var list v1alpha2.VirtualMachineMACAddressList
	if err := rd.List(ctx, &list, client.InNamespace(vm.Namespace), client.MatchingLabels{v1alpha2.LabelVirtualMachineUID: string(vm.UID)}); err != nil {
		return nil, fmt.Errorf("listing the VM's VirtualMachineMACAddresses: %w", err)
	}
	var out []*v1alpha2.VirtualMachineMACAddress
	for i := range list.Items {
		if macaddress.OwnerVM(&list.Items[i]) == vm.Name {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

// fittingMAC is the VM's own vmmac not being deleted, if any.
func fittingMAC(owned []*v1alpha2.VirtualMachineMACAddress) *v1alpha2.VirtualMachineMACAddress {
	for _, m := range owned {
		if m.DeletionTimestamp.IsZero() {
			return m
		}
	}
	return nil
}

// makeMAC makes the VM's own vmmac, unless the apiserver has one the cache lacks. A VM
// that runs with a MAC already (a pod of an earlier release, whose MAC came from its IP
// address) asks for that one, so its guest sees the same NIC after a restart.
func (r *Reconciler) makeMAC(ctx context.Context, vm *v1alpha2.VirtualMachine, runs string) (*v1alpha2.VirtualMachineMACAddress, error) {
	rd := r.APIReader
	if rd == nil {
		rd = r.Client
	}
	owned, err := r.ownMACs(ctx, vm, rd)
	if err != nil {
		return nil, err
	}
	if m := fittingMAC(owned); m != nil {
		return m, nil
	}
	m := &v1alpha2.VirtualMachineMACAddress{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    vm.Name + "-",
			Namespace:       vm.Namespace,
			Labels:          map[string]string{v1alpha2.LabelVirtualMachineUID: string(vm.UID)},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1alpha2.GroupVersion.WithKind("VirtualMachine"))},
		},
		Spec: v1alpha2.VirtualMachineMACAddressSpec{Address: runs},
	}
	if err := r.Client.Create(ctx, m); err != nil {
		return nil, fmt.Errorf("making the VM's VirtualMachineMACAddress: %w", err)
	}
	r.Recorder.Eventf(vm, corev1.EventTypeNormal, "MACAddressRequested", "Made VirtualMachineMACAddress %s", m.Name)
	return m, nil
}

// dropMACs deletes the VM's own vmmacs that it no longer asks for (its spec names
// another), while the VM does not run.
func (r *Reconciler) dropMACs(ctx context.Context, s *scope, owned []*v1alpha2.VirtualMachineMACAddress) error {
	if s.running() {
		return nil
	}
	keep := fittingMAC(owned)
	if s.vm.MainMACAddressName() != "" {
		keep = nil
	}
	for _, m := range owned {
		if m == keep || !m.DeletionTimestamp.IsZero() || m.Name == s.vm.MainMACAddressName() {
			continue
		}
		if err := r.Client.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting VirtualMachineMACAddress %s, which the VM no longer uses: %w", m.Name, err)
		}
	}
	return nil
}

// releaseMACs deletes the vmmacs the VM made for itself (one it only names stays, with
// its address, for the next VM that names it).
func (r *Reconciler) releaseMACs(ctx context.Context, vm *v1alpha2.VirtualMachine) error {
	owned, err := r.ownMACs(ctx, vm, r.Client)
	if err != nil {
		return err
	}
	for _, m := range owned {
		if err := r.Client.Delete(ctx, m); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("releasing the VM's VirtualMachineMACAddress %s: %w", m.Name, err)
		}
	}
	return nil
}

// vmsOfMAC: the VMs a vmmac concerns: its user, its maker, and those that name it.
func (r *Reconciler) vmsOfMAC(ctx context.Context, o client.Object) []reconcile.Request {
	m := o.(*v1alpha2.VirtualMachineMACAddress)
	seen := map[string]bool{}
	for _, n := range []string{m.Status.VirtualMachine, macaddress.OwnerVM(m)} {
		if n != "" {
			seen[n] = true
		}
	}
	var list v1alpha2.VirtualMachineList
	if r.Client.List(ctx, &list, client.InNamespace(m.Namespace), client.MatchingFields{macaddress.IndexVMMACName: m.Name}) == nil {
		for _, vm := range list.Items {
			seen[vm.Name] = true
		}
	}
	var out []reconcile.Request
	for n := range seen {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: m.Namespace, Name: n}})
	}
	return out
}
