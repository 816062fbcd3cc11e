package vm

import (
	"context"
	"fmt"
	"net/netip"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// LabelLeaseHolder on an address lease is the UID of the VM that holds it.
const LabelLeaseHolder = "virtualization.ferryvm.io/vm-uid"

// ensureAddress makes sure the VM holds a lease on an address and records it in s.
// The lease is created with the address as its name, so a second VM asking for the
// same address gets AlreadyExists from the apiserver, whatever any cache said.
func (r *Reconciler) ensureAddress(ctx context.Context, s *scope) error {
	vm := s.vm
	var held v1alpha2.VirtualMachineIPAddressLeaseList
	if err := r.Client.List(ctx, &held, client.MatchingFields{IndexLeaseHolder: string(vm.UID)}); err != nil {
		return fmt.Errorf("listing address leases: %w", err)
	}
	for _, l := range held.Items {
		if addr, ok := ipam.AddressOf(l.Name); ok && (vm.Spec.VirtualMachineIPAddress == "" || vm.Spec.VirtualMachineIPAddress == addr) {
			r.recordAddress(s, addr, l.Name)
			return nil
		}
	}

	if want := vm.Spec.VirtualMachineIPAddress; want != "" {
		if err := r.Range.Check(want); err != nil {
			s.ipReason, s.ipMessage = v1alpha2.ReasonIPUnavailable, err.Error()
			return nil
		}
		taken, err := r.tryLease(ctx, vm, want)
		if err != nil {
			return err
		}
		if taken != "" {
			s.ipReason = v1alpha2.ReasonIPUnavailable
			s.ipMessage = fmt.Sprintf("address %s is already held by VM %s; choose another address or leave spec.virtualMachineIPAddress empty", want, taken)
			return nil
		}
		r.recordAddress(s, want, ipam.LeaseName(want))
		return nil
	}

	// Candidates come from a cursor that moves on through the range, each looked up by
	// name in the cache: a new VM costs a few lookups, not a list of every lease. The cache
	// may lag behind leases just made elsewhere; AlreadyExists moves us on.
	for tries := 0; tries < 16; {
		addr, ok := r.nextCandidate(ctx)
		if !ok {
			s.ipReason = v1alpha2.ReasonIPUnavailable
			s.ipMessage = fmt.Sprintf("no free address left in the VM range %s", r.Range)
			return nil
		}
		tries++
		taken, err := r.tryLease(ctx, vm, addr.String())
		if err != nil {
			return err
		}
		if taken == "" {
			r.recordAddress(s, addr.String(), ipam.LeaseName(addr.String()))
			r.Recorder.Eventf(vm, "Normal", "AddressLeased", "Leased address %s", addr)
			return nil
		}
	}
	return fmt.Errorf("could not lease an address after 16 tries; retrying")
}

// tryLease creates the lease of addr for vm. It returns the holder's name when another
// VM holds it already.
func (r *Reconciler) tryLease(ctx context.Context, vm *v1alpha2.VirtualMachine, addr string) (string, error) {
	lease := &v1alpha2.VirtualMachineIPAddressLease{
		ObjectMeta: metav1.ObjectMeta{
			Name:   ipam.LeaseName(addr),
			Labels: map[string]string{LabelLeaseHolder: string(vm.UID)},
		},
		Spec: v1alpha2.VirtualMachineIPAddressLeaseSpec{VirtualMachineRef: v1alpha2.VirtualMachineRef{
			Namespace: vm.Namespace, Name: vm.Name, UID: string(vm.UID),
		}},
	}
	err := r.Client.Create(ctx, lease)
	if err == nil {
		return "", nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("leasing address %s: %w", addr, err)
	}
	var existing v1alpha2.VirtualMachineIPAddressLease
	if err := r.Client.Get(ctx, client.ObjectKey{Name: lease.Name}, &existing); err != nil {
		if apierrors.IsNotFound(err) {
			return "(just released)", nil
		}
		return "", err
	}
	if existing.Spec.VirtualMachineRef.UID == string(vm.UID) {
		return "", nil
	}
	ref := existing.Spec.VirtualMachineRef
	return ref.Namespace + "/" + ref.Name, nil
}

func (r *Reconciler) recordAddress(s *scope, addr, lease string) {
	s.ipReady = true
	s.ipReason, s.ipMessage = v1alpha2.ReasonIPLeased, "the VM holds address "+addr
	s.vm.Status.IPAddress = addr
	s.vm.Status.VirtualMachineIPAddressLease = lease
}

// releaseAddress deletes the leases the VM holds.
func (r *Reconciler) releaseAddress(ctx context.Context, vm *v1alpha2.VirtualMachine) error {
	err := r.Client.DeleteAllOf(ctx, &v1alpha2.VirtualMachineIPAddressLease{}, client.MatchingLabels{LabelLeaseHolder: string(vm.UID)})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("releasing the VM's address: %w", err)
	}
	return nil
}

// IndexLeaseHolder is the cache index of address leases by the UID of the VM that holds
// them (label LabelLeaseHolder).
const IndexLeaseHolder = "ferry.leaseHolder"

// IndexLeases registers IndexLeaseHolder with a manager's field indexer.
func IndexLeases(ctx context.Context, fi client.FieldIndexer) error {
	return fi.IndexField(ctx, &v1alpha2.VirtualMachineIPAddressLease{}, IndexLeaseHolder, func(o client.Object) []string {
		if uid := o.GetLabels()[LabelLeaseHolder]; uid != "" {
			return []string{uid}
		}
		return nil
	})
}

// nextCandidate returns the next address of the range, from the cursor on, that the cache
// knows no lease of; ok is false when a whole round found none.
func (r *Reconciler) nextCandidate(ctx context.Context) (netip.Addr, bool) {
	r.cursorMu.Lock()
	defer r.cursorMu.Unlock()
	for range r.Range.Size() {
		r.cursor, _ = r.Range.After(r.cursor)
		var l v1alpha2.VirtualMachineIPAddressLease
		if err := r.Client.Get(ctx, client.ObjectKey{Name: ipam.LeaseName(r.cursor.String())}, &l); apierrors.IsNotFound(err) {
			return r.cursor, true
		}
	}
	return netip.Addr{}, false
}
