package macaddress

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/macaddr"
)

// bind makes s.mac hold a lease: the one that names it already, or a new one, on
// spec.address or on a free address of the cluster's prefix. A lease names its holder
// from its creation on, so the vmmac is Bound at once; the lease controller's status
// follows.
func (r *Reconciler) bind(ctx context.Context, s *scope) error {
	mac := s.mac
	addr, err := Wanted(mac)
	if err != nil {
		// The schema refuses such an address; one stored before it did says what to fix.
		s.notBound(v1alpha2.ReasonMACAddressLeaseNotReady, "spec.address: "+err.Error())
		return nil
	}
	static := mac.Spec.Address != ""
	var lease *v1alpha2.VirtualMachineMACAddressLease
	if addr != "" {
		lease, err = r.leaseNamed(ctx, macaddr.LeaseName(addr))
	} else {
		lease, err = r.leaseOf(ctx, mac)
	}
	if err != nil {
		s.notBound(v1alpha2.ReasonMACAddressLeaseNotReady, "Reading its lease: "+err.Error())
		return err
	}
	switch {
	case lease != nil && HeldBy(lease, mac.Namespace, mac.Name) && uidOK(lease, mac):
		if err := r.label(ctx, lease, mac); err != nil {
			return err
		}
		s.boundTo(lease)
		return nil
	case lease != nil:
		problem, gone, err := Problem(ctx, r.APIReader, lease)
		if err != nil {
			return err
		}
		reason := v1alpha2.ReasonMACAddressLeaseAlreadyExists
		if !static {
			reason = v1alpha2.ReasonMACAddressLeaseLost
		}
		if gone {
			// Its holder is gone: the lease controller deletes it, and this one takes it.
			s.requeue = 2 * time.Second
		}
		msg := fmt.Sprintf("The MAC address %s %s.", addr, problem)
		if c := meta.FindStatusCondition(mac.Status.Conditions, v1alpha2.MACAddressConditionBound); c == nil || c.Message != msg {
			r.Recorder.Event(mac, corev1.EventTypeWarning, reason, msg)
		}
		s.notBound(reason, msg)
		return nil
	}
	if addr == "" {
		return r.allocate(ctx, s)
	}
	// Static, or an allocated address whose lease is gone: (re)create its lease.
	created, err := r.create(ctx, mac, addr)
	if err != nil {
		s.notBound(v1alpha2.ReasonMACAddressLeaseNotFound, fmt.Sprintf("Creating the VirtualMachineMACAddressLease of %s: %v", addr, err))
		return err
	}
	if created == nil {
		// Made by someone else since the cache was read: look again.
		s.notBound(v1alpha2.ReasonMACAddressLeaseNotFound, "Waiting for the VirtualMachineMACAddressLease of "+addr+" to be created.")
		s.requeue = time.Second
		return nil
	}
	r.Recorder.Eventf(mac, corev1.EventTypeNormal, "Bound", "The VirtualMachineMACAddressLease for the MAC address %q has been created.", addr)
	s.boundTo(created)
	return nil
}

func (s *scope) boundTo(l *v1alpha2.VirtualMachineMACAddressLease) {
	addr, _ := macaddr.AddressOf(l.Name)
	s.bound, s.boundReason, s.boundM = true, v1alpha2.ReasonMACAddressBound, "The VirtualMachineMACAddressLease "+l.Name+" holds "+addr+"."
	s.mac.Status.Address = addr
}

func (s *scope) notBound(reason, msg string) {
	s.bound, s.boundReason, s.boundM = false, reason, msg
}

// Problem says who holds lease, for a vmmac that asks for its address: "is already held
// by VM ns/vm (VirtualMachineMACAddress ns/name)", or by a vmmac no VM uses. gone is true
// when the vmmac it names no longer exists (the lease is about to be deleted).
func Problem(ctx context.Context, r client.Reader, l *v1alpha2.VirtualMachineMACAddressLease) (msg string, gone bool, err error) {
	ref := l.Spec.VirtualMachineMACAddressRef
	if ref == nil || ref.Name == "" {
		return "is held by lease " + l.Name + ", which names no VirtualMachineMACAddress: it is about to be deleted", true, nil
	}
	var m v1alpha2.VirtualMachineMACAddress
	err = r.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &m)
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Sprintf("is held by lease %s of VirtualMachineMACAddress %s/%s, which is gone: the lease is about to be deleted", l.Name, ref.Namespace, ref.Name), true, nil
	case err != nil:
		return "", false, fmt.Errorf("reading VirtualMachineMACAddress %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	if vm := m.Status.VirtualMachine; vm != "" {
		return fmt.Sprintf("is already held by VM %s/%s (VirtualMachineMACAddress %s/%s)", m.Namespace, vm, m.Namespace, m.Name), false, nil
	}
	return fmt.Sprintf("is already held by VirtualMachineMACAddress %s/%s, which no VM uses", m.Namespace, m.Name), false, nil
}

// leaseNamed reads a lease by name: the cache first, then the apiserver (the cache may
// not have a lease just made).
func (r *Reconciler) leaseNamed(ctx context.Context, name string) (*v1alpha2.VirtualMachineMACAddressLease, error) {
	for _, rd := range []client.Reader{r.Client, r.APIReader} {
		l := &v1alpha2.VirtualMachineMACAddressLease{}
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

// leaseOf finds the lease of an Auto vmmac that has no address yet: labelled with its
// UID (made, but its address not recorded).
func (r *Reconciler) leaseOf(ctx context.Context, mac *v1alpha2.VirtualMachineMACAddress) (*v1alpha2.VirtualMachineMACAddressLease, error) {
	for _, rd := range []client.Reader{r.Client, r.APIReader} {
		var list v1alpha2.VirtualMachineMACAddressLeaseList
		if err := rd.List(ctx, &list, client.MatchingLabels{v1alpha2.LabelVirtualMachineMACAddressUID: string(mac.UID)}); err != nil {
			return nil, err
		}
		for i := range list.Items {
			if _, ok := macaddr.AddressOf(list.Items[i].Name); ok && HeldBy(&list.Items[i], mac.Namespace, mac.Name) {
				return &list.Items[i], nil
			}
		}
	}
	return nil, nil
}

// label marks the lease with its holder's UID (one this controller made has it already).
func (r *Reconciler) label(ctx context.Context, l *v1alpha2.VirtualMachineMACAddressLease, mac *v1alpha2.VirtualMachineMACAddress) error {
	if l.Labels[v1alpha2.LabelVirtualMachineMACAddressUID] == string(mac.UID) {
		return nil
	}
	orig := l.DeepCopy()
	metav1.SetMetaDataLabel(&l.ObjectMeta, v1alpha2.LabelVirtualMachineMACAddressUID, string(mac.UID))
	return r.Client.Patch(ctx, l, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}

// create makes the lease of addr for mac; nil, nil when it exists already.
func (r *Reconciler) create(ctx context.Context, mac *v1alpha2.VirtualMachineMACAddress, addr string) (*v1alpha2.VirtualMachineMACAddressLease, error) {
	l := &v1alpha2.VirtualMachineMACAddressLease{
		ObjectMeta: metav1.ObjectMeta{
			Name:   macaddr.LeaseName(addr),
			Labels: map[string]string{v1alpha2.LabelVirtualMachineMACAddressUID: string(mac.UID)},
		},
		Spec: v1alpha2.VirtualMachineMACAddressLeaseSpec{VirtualMachineMACAddressRef: &v1alpha2.VirtualMachineMACAddressLeaseMACAddressRef{
			Name: mac.Name, Namespace: mac.Namespace,
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

// allocate leases a random free address of the cluster's prefix: 2^24 addresses, so a
// candidate is almost always free; one taken (in the cache, or AlreadyExists from the
// apiserver) moves on to another.
func (r *Reconciler) allocate(ctx context.Context, s *scope) error {
	for range 16 {
		addr, err := r.Prefix.Random(r.Rand)
		if err != nil {
			return fmt.Errorf("drawing a MAC address: %w", err)
		}
		var seen v1alpha2.VirtualMachineMACAddressLease
		if err := r.Client.Get(ctx, client.ObjectKey{Name: macaddr.LeaseName(addr)}, &seen); !apierrors.IsNotFound(err) {
			continue
		}
		l, err := r.create(ctx, s.mac, addr)
		if err != nil {
			s.notBound(v1alpha2.ReasonMACAddressLeaseNotFound, fmt.Sprintf("Creating the VirtualMachineMACAddressLease of %s: %v", addr, err))
			return err
		}
		if l != nil {
			r.Recorder.Eventf(s.mac, corev1.EventTypeNormal, "Bound", "The VirtualMachineMACAddressLease for the MAC address %q has been created.", addr)
			s.boundTo(l)
			return nil
		}
	}
	s.notBound(v1alpha2.ReasonMACAddressLeaseNotFound, fmt.Sprintf("No free MAC address found in 16 draws from the cluster's prefix %s: trying again.", r.Prefix))
	s.requeue = time.Second
	return nil
}

// freeLeases deletes the leases mac holds (its address's, and any labelled with its UID),
// each only as it was read, so that a lease taken since is not lost.
func (r *Reconciler) freeLeases(ctx context.Context, mac *v1alpha2.VirtualMachineMACAddress) error {
	var list v1alpha2.VirtualMachineMACAddressLeaseList
	if err := r.APIReader.List(ctx, &list, client.MatchingLabels{v1alpha2.LabelVirtualMachineMACAddressUID: string(mac.UID)}); err != nil {
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return nil // the leases' CRD is gone, and every lease with it
		}
		return fmt.Errorf("listing the leases of VirtualMachineMACAddress %s: %w", mac.Name, err)
	}
	leases := list.Items
	if mac.Status.Address != "" {
		if l, err := r.leaseNamed(ctx, macaddr.LeaseName(mac.Status.Address)); err != nil {
			return err
		} else if l != nil {
			leases = append(leases, *l)
		}
	}
	for i := range leases {
		l := &leases[i]
		if !HeldBy(l, mac.Namespace, mac.Name) || !uidOK(l, mac) {
			continue
		}
		rv := l.ResourceVersion
		err := r.Client.Delete(ctx, l, client.Preconditions{ResourceVersion: &rv})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("freeing VirtualMachineMACAddressLease %s: %w", l.Name, err)
		}
		if err == nil {
			ctrl.LoggerFrom(ctx).Info("Freed a MAC address lease", "lease", l.Name, "vmmac", mac.Namespace+"/"+mac.Name)
		}
	}
	return nil
}
