package ipaddress

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// bind makes s.ip hold a lease: the one that names it already, one it may take (released
// by its namespace, or its VM's lease of an earlier release), or a new one, on
// spec.staticIP or on a free address of the range. A lease names its holder from its
// creation (or its take-over) on, so the vmip is Bound at once; the lease controller's
// status follows.
func (r *Reconciler) bind(ctx context.Context, s *scope) error {
	ip := s.ip
	static := ip.Spec.Type == v1alpha2.VirtualMachineIPAddressTypeStatic
	addr := ip.Status.Address
	if static {
		addr = ip.Spec.StaticIP
	}
	maker, err := MakerUID(ctx, r.Client, ip)
	if err != nil {
		return err
	}
	taker := Taker{Namespace: ip.Namespace, Name: ip.Name, VMUID: maker}

	var lease *v1alpha2.VirtualMachineIPAddressLease
	if addr != "" {
		lease, err = r.leaseNamed(ctx, ipam.LeaseName(addr))
	} else {
		lease, err = r.leaseOf(ctx, ip, maker)
	}
	if err != nil {
		s.notBound(v1alpha2.ReasonIPAddressLeaseNotReady, "Reading its lease: "+err.Error())
		return err
	}

	switch {
	case lease != nil && HeldBy(lease, ip.Namespace, ip.Name) && uidOK(lease, ip):
		if err := r.label(ctx, lease, ip); err != nil {
			return err
		}
		s.boundTo(lease)
		return nil
	case lease != nil && Takeable(lease, taker):
		if err := r.take(ctx, lease, ip); err != nil {
			s.notBound(v1alpha2.ReasonIPAddressLeaseNotReady, fmt.Sprintf("Taking the VirtualMachineIPAddressLease %q: %v", lease.Name, err))
			return err
		}
		r.Recorder.Eventf(ip, corev1.EventTypeNormal, "Bound", "Took the released VirtualMachineIPAddressLease %q.", lease.Name)
		s.boundTo(lease)
		return nil
	case lease != nil:
		problem, err := Problem(ctx, r.APIReader, ipam.LeaseNameToAddress(lease.Name), taker, nil)
		if err != nil {
			return err
		}
		if problem == "" {
			// Released since it was read: take it next time.
			s.notBound(v1alpha2.ReasonIPAddressLeaseNotReady, "Waiting for the VirtualMachineIPAddressLease "+lease.Name+" to be released.")
			s.requeue = time.Second
			return nil
		}
		reason := v1alpha2.ReasonIPAddressLeaseAlreadyExists
		if !static {
			reason = v1alpha2.ReasonIPAddressLeaseLost
		}
		s.notBound(reason, "The IP address "+problem+".")
		r.Recorder.Event(ip, corev1.EventTypeWarning, reason, s.boundM)
		return nil
	}

	// No lease yet.
	if static {
		if err := r.Ranges.Check(addr); err != nil {
			s.notBound(v1alpha2.ReasonIPAddressOutOfRange, fmt.Sprintf("The IP address %q is out of the valid range: %v.", addr, err))
			return nil
		}
	}
	if addr == "" {
		return r.allocate(ctx, s)
	}
	// Static, or an Auto address whose lease was lost: (re)create its lease.
	created, err := r.create(ctx, ip, addr)
	if err != nil {
		s.notBound(v1alpha2.ReasonIPAddressLeaseNotFound, fmt.Sprintf("Creating the VirtualMachineIPAddressLease of %s: %v", addr, err))
		return err
	}
	if created == nil {
		// Made by someone else since the cache was read: look again.
		s.notBound(v1alpha2.ReasonIPAddressLeaseNotFound, "Waiting for the IP address to be allocated and a new VirtualMachineIPAddressLease to be created.")
		s.requeue = time.Second
		return nil
	}
	r.Recorder.Eventf(ip, corev1.EventTypeNormal, "Bound", "The VirtualMachineIPAddressLease for the ip address %q has been created.", addr)
	s.boundTo(created)
	return nil
}

func (s *scope) boundTo(l *v1alpha2.VirtualMachineIPAddressLease) {
	addr := ipam.LeaseNameToAddress(l.Name)
	s.bound, s.boundReason, s.boundM = true, v1alpha2.ReasonIPAddressBound, "The VirtualMachineIPAddressLease "+l.Name+" holds "+addr+"."
	s.ip.Status.Address = addr
}

func (s *scope) notBound(reason, msg string) {
	s.bound, s.boundReason, s.boundM = false, reason, msg
}

// uidOK: a lease that names ip by name was not taken by an earlier vmip of that name.
func uidOK(l *v1alpha2.VirtualMachineIPAddressLease, ip *v1alpha2.VirtualMachineIPAddress) bool {
	u := l.Labels[v1alpha2.LabelVirtualMachineIPAddressUID]
	return u == "" || u == string(ip.UID)
}

// leaseNamed reads a lease by name: the cache first, then the apiserver (the cache may
// not have a lease just made).
func (r *Reconciler) leaseNamed(ctx context.Context, name string) (*v1alpha2.VirtualMachineIPAddressLease, error) {
	for _, rd := range []client.Reader{r.Client, r.APIReader} {
		l := &v1alpha2.VirtualMachineIPAddressLease{}
		err := rd.Get(ctx, client.ObjectKey{Name: name}, l)
		if err == nil {
			return l, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	return nil, nil
}

// leaseOf finds the lease of an Auto vmip that has no address yet: labelled with its
// UID (made, but its address not recorded), or, for a VM's own vmip, the lease of that
// VM from an earlier release of Ferry.
func (r *Reconciler) leaseOf(ctx context.Context, ip *v1alpha2.VirtualMachineIPAddress, maker string) (*v1alpha2.VirtualMachineIPAddressLease, error) {
	selectors := []client.MatchingLabels{{v1alpha2.LabelVirtualMachineIPAddressUID: string(ip.UID)}}
	if maker != "" {
		selectors = append(selectors, client.MatchingLabels{v1alpha2.LabelLegacyLeaseHolder: maker})
	}
	for _, sel := range selectors {
		for _, rd := range []client.Reader{r.Client, r.APIReader} {
			var list v1alpha2.VirtualMachineIPAddressLeaseList
			if err := rd.List(ctx, &list, sel); err != nil {
				return nil, err
			}
			for i := range list.Items {
				if _, ok := ipam.AddressOf(list.Items[i].Name); ok {
					return &list.Items[i], nil
				}
			}
		}
	}
	return nil, nil
}

// label marks the lease with its holder's UID (a lease made or taken by this controller
// has it already).
func (r *Reconciler) label(ctx context.Context, l *v1alpha2.VirtualMachineIPAddressLease, ip *v1alpha2.VirtualMachineIPAddress) error {
	if l.Labels[v1alpha2.LabelVirtualMachineIPAddressUID] == string(ip.UID) {
		return nil
	}
	orig := l.DeepCopy()
	metav1.SetMetaDataLabel(&l.ObjectMeta, v1alpha2.LabelVirtualMachineIPAddressUID, string(ip.UID))
	return r.Client.Patch(ctx, l, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// take makes a released (or legacy) lease name ip; the optimistic lock makes a lease
// taken meanwhile by another a conflict.
func (r *Reconciler) take(ctx context.Context, l *v1alpha2.VirtualMachineIPAddressLease, ip *v1alpha2.VirtualMachineIPAddress) error {
	orig := l.DeepCopy()
	l.Spec.VirtualMachineIPAddressRef = &v1alpha2.VirtualMachineIPAddressLeaseIPAddressRef{Name: ip.Name, Namespace: ip.Namespace}
	metav1.SetMetaDataLabel(&l.ObjectMeta, v1alpha2.LabelVirtualMachineIPAddressUID, string(ip.UID))
	delete(l.Labels, v1alpha2.LabelLegacyLeaseHolder)
	return r.Client.Patch(ctx, l, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// create makes the lease of addr for ip; nil, nil when it exists already.
func (r *Reconciler) create(ctx context.Context, ip *v1alpha2.VirtualMachineIPAddress, addr string) (*v1alpha2.VirtualMachineIPAddressLease, error) {
	l := &v1alpha2.VirtualMachineIPAddressLease{
		ObjectMeta: metav1.ObjectMeta{
			Name:   ipam.LeaseName(addr),
			Labels: map[string]string{v1alpha2.LabelVirtualMachineIPAddressUID: string(ip.UID)},
		},
		Spec: v1alpha2.VirtualMachineIPAddressLeaseSpec{VirtualMachineIPAddressRef: &v1alpha2.VirtualMachineIPAddressLeaseIPAddressRef{
			Name: ip.Name, Namespace: ip.Namespace,
		}},
	}
	err := r.Client.Create(ctx, l)
	if apierrors.IsAlreadyExists(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// allocate leases a free address of the range for an Auto vmip. Candidates come from a
// cursor that moves on through the range, each looked up by name in the cache: a new
// address costs a few lookups, not a list of every lease. The cache may lag behind leases
// just made elsewhere; AlreadyExists moves on. Released leases are not free: their
// namespace may take them back until they are deleted.
func (r *Reconciler) allocate(ctx context.Context, s *scope) error {
	for tries := 0; tries < 16; tries++ {
		addr, ok := r.nextCandidate(ctx)
		if !ok {
			s.notBound(v1alpha2.ReasonIPAddressLeaseNotReady, fmt.Sprintf("No free address left in the VM address ranges %s.", r.Ranges))
			s.requeue = 30 * time.Second
			r.Recorder.Event(s.ip, corev1.EventTypeWarning, v1alpha2.ReasonIPAddressLeaseNotReady, s.boundM)
			return nil
		}
		l, err := r.create(ctx, s.ip, addr.String())
		if err != nil {
			s.notBound(v1alpha2.ReasonIPAddressLeaseNotFound, fmt.Sprintf("Creating the VirtualMachineIPAddressLease of %s: %v", addr, err))
			return err
		}
		if l != nil {
			r.Recorder.Eventf(s.ip, corev1.EventTypeNormal, "Bound", "The VirtualMachineIPAddressLease for the ip address %q has been created.", addr)
			s.boundTo(l)
			return nil
		}
	}
	s.notBound(v1alpha2.ReasonIPAddressLeaseNotFound, "Waiting for the IP address to be allocated and a new VirtualMachineIPAddressLease to be created.")
	s.requeue = time.Second
	return nil
}

// nextCandidate returns the next address of the range, from the cursor on, that the cache
// knows no lease of; ok is false when a whole round found none.
func (r *Reconciler) nextCandidate(ctx context.Context) (netip.Addr, bool) {
	r.cursorMu.Lock()
	defer r.cursorMu.Unlock()
	for range r.Ranges.Size() {
		r.cursor, _ = r.Ranges.After(r.cursor)
		var l v1alpha2.VirtualMachineIPAddressLease
		if err := r.Client.Get(ctx, client.ObjectKey{Name: ipam.LeaseName(r.cursor.String())}, &l); apierrors.IsNotFound(err) {
			return r.cursor, true
		}
	}
	return netip.Addr{}, false
}
