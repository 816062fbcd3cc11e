package ipaddress

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// Mine tells whether a vmip that holds an address counts as the asker's own.
type Mine func(ip *v1alpha2.VirtualMachineIPAddress) bool

// Taker is who asks for an address: a vmip of a namespace (Name "" for one not made yet),
// and, for a VM's own vmip, that VM's UID (legacy leases of that VM are its own).
type Taker struct {
	Namespace, Name string
	VMUID           string
}

// Takeable tells whether the lease may be taken by t: nobody holds it, it was released
// by t's namespace (or by nobody's), and it is no legacy lease of another VM.
func Takeable(l *v1alpha2.VirtualMachineIPAddressLease, t Taker) bool {
	if legacy := l.Labels[v1alpha2.LabelLegacyLeaseHolder]; legacy != "" && legacy != t.VMUID {
		return false
	}
	ref := l.Spec.VirtualMachineIPAddressRef
	if ref == nil {
		return true
	}
	if ref.Name != "" {
		return false
	}
	return ref.Namespace == "" || ref.Namespace == t.Namespace
}

// MakerUID is the UID of the VM that made ip for itself, checked against the VM itself
// (labels and owner references are written by whoever writes the vmip): "" when ip names
// no maker, or the VM of that name in ip's namespace has another UID. Only a VM's own vmip
// may take over that VM's lease of an earlier release.
func MakerUID(ctx context.Context, r client.Reader, ip *v1alpha2.VirtualMachineIPAddress) (string, error) {
	name := OwnerVM(ip)
	if name == "" {
		return "", nil
	}
	var vm v1alpha2.VirtualMachine
	err := r.Get(ctx, client.ObjectKey{Namespace: ip.Namespace, Name: name}, &vm)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if uid := ip.Labels[v1alpha2.LabelVirtualMachineUID]; uid == string(vm.UID) {
		return uid, nil
	}
	return "", nil
}

// HeldBy tells whether the lease names the vmip ns/name as its holder.
func HeldBy(l *v1alpha2.VirtualMachineIPAddressLease, ns, name string) bool {
	ref := l.Spec.VirtualMachineIPAddressRef
	return ref != nil && ref.Name != "" && ref.Name == name && ref.Namespace == ns
}

// Problem says why t cannot have addr ("" if it can): its lease is held by another vmip
// (and the VM that uses it), or was released by another namespace lately. mine, if set,
// accepts a holding vmip as t's own (a VM's webhook: the vmip the VM uses).
func Problem(ctx context.Context, r client.Reader, addr string, t Taker, mine Mine) (string, error) {
	var l v1alpha2.VirtualMachineIPAddressLease
	err := r.Get(ctx, client.ObjectKey{Name: ipam.LeaseName(addr)}, &l)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the lease of %s: %w", addr, err)
	}
	if Takeable(&l, t) || HeldBy(&l, t.Namespace, t.Name) && t.Name != "" {
		return "", nil
	}
	ref := l.Spec.VirtualMachineIPAddressRef
	if ref == nil || ref.Name == "" {
		if legacy := l.Labels[v1alpha2.LabelLegacyLeaseHolder]; legacy != "" && (ref == nil || ref.Name == "") {
			return fmt.Sprintf("%s is already held by another VM (lease %s of an earlier Ferry release, VM UID %s)", addr, l.Name, legacy), nil
		}
		until := ""
		if c := meta.FindStatusCondition(l.Status.Conditions, v1alpha2.LeaseConditionBound); c != nil && c.Reason == v1alpha2.ReasonLeaseReleased {
			until = " (released at " + c.LastTransitionTime.UTC().Format(time.RFC3339) + ")"
		}
		return fmt.Sprintf("%s was released lately by namespace %s and is kept for it for a while%s", addr, ref.Namespace, until), nil
	}
	var ip v1alpha2.VirtualMachineIPAddress
	err = r.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &ip)
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("%s is already held by VirtualMachineIPAddress %s/%s", addr, ref.Namespace, ref.Name), nil
	case err != nil:
		return "", fmt.Errorf("reading VirtualMachineIPAddress %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	if mine != nil && mine(&ip) {
		return "", nil
	}
	if vm := ip.Status.VirtualMachine; vm != "" {
		return fmt.Sprintf("%s is already held by VM %s/%s (VirtualMachineIPAddress %s)", addr, ip.Namespace, vm, ip.Name), nil
	}
	return fmt.Sprintf("%s is already held by VirtualMachineIPAddress %s/%s, which no VM uses", addr, ip.Namespace, ip.Name), nil
}
