package ipaddress

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// TestLeaseLifecycle: a lease whose vmip exists is Bound; once the vmip is gone it is
// Released, keeping its namespace, and deleted after the retention time, not before. A
// lease of an earlier release waits while its VM exists.
func TestLeaseLifecycle(t *testing.T) {
	s := runtime.NewScheme()
	_ = v1alpha2.AddToScheme(s)
	now := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	ip := vmip("a", "web-ip", v1alpha2.VirtualMachineIPAddressTypeStatic, "10.66.10.5")
	ip.UID = "u-ip"
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "old", UID: "u-old"}}
	c := fake.NewClientBuilder().WithScheme(s).
		WithStatusSubresource(&v1alpha2.VirtualMachineIPAddressLease{}).
		WithObjects(lease("10.66.10.5", "a", "web-ip", map[string]string{v1alpha2.LabelVirtualMachineIPAddressUID: "u-ip"}), ip,
			lease("10.66.10.6", "", "", map[string]string{v1alpha2.LabelLegacyLeaseHolder: "u-old"}), vm).Build()
	r := &LeaseReconciler{Client: c, Recorder: record.NewFakeRecorder(100), Retention: 10 * time.Minute, Now: func() time.Time { return now }}
	reconcile := func(addr string) (ctrl.Result, *v1alpha2.VirtualMachineIPAddressLease) {
		t.Helper()
		res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Name: ipam.LeaseName(addr)}})
		if err != nil {
			t.Fatal(err)
		}
		l := &v1alpha2.VirtualMachineIPAddressLease{}
		if err := c.Get(context.Background(), client.ObjectKey{Name: ipam.LeaseName(addr)}, l); apierrors.IsNotFound(err) {
			return res, nil
		} else if err != nil {
			t.Fatal(err)
		}
		return res, l
	}

	if _, l := reconcile("10.66.10.5"); l.Status.Phase != v1alpha2.VirtualMachineIPAddressLeasePhaseBound {
		t.Fatalf("with its vmip: %s", l.Status.Phase)
	}
	if err := c.Delete(context.Background(), ip); err != nil {
		t.Fatal(err)
	}
	_, l := reconcile("10.66.10.5")
	if l.Status.Phase != v1alpha2.VirtualMachineIPAddressLeasePhaseReleased || l.Spec.VirtualMachineIPAddressRef.Name != "" ||
		l.Spec.VirtualMachineIPAddressRef.Namespace != "a" || l.Labels[v1alpha2.LabelVirtualMachineIPAddressUID] != "" {
		t.Fatalf("without its vmip: %s %+v %v", l.Status.Phase, l.Spec.VirtualMachineIPAddressRef, l.Labels)
	}
	// The fake client stamps the transition with the wall clock; the retention counts from it.
	released := l.Status.Conditions[0].LastTransitionTime.Time
	now = released.Add(9 * time.Minute)
	if res, l := reconcile("10.66.10.5"); l == nil || res.RequeueAfter <= 0 || res.RequeueAfter > time.Minute {
		t.Fatalf("9 minutes after its release: %v, requeue %v", l, res.RequeueAfter)
	}
	now = released.Add(10 * time.Minute)
	if _, l := reconcile("10.66.10.5"); l != nil {
		t.Fatalf("10 minutes after its release it is still there: %s", l.Status.Phase)
	}

	// The earlier release's lease: kept while its VM exists, then released and deleted.
	now = time.Now()
	if _, l := reconcile("10.66.10.6"); l == nil {
		t.Fatal("a legacy lease whose VM exists was deleted")
	}
	if err := c.Delete(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
	_, l = reconcile("10.66.10.6")
	if l == nil || l.Status.Phase != v1alpha2.VirtualMachineIPAddressLeasePhaseReleased {
		t.Fatalf("a legacy lease without its VM: %v", l)
	}
	now = l.Status.Conditions[0].LastTransitionTime.Add(11 * time.Minute)
	if _, l := reconcile("10.66.10.6"); l != nil {
		t.Fatal("a legacy lease without its VM outlived the retention time")
	}
}
