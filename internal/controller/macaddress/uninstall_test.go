package macaddress

import (
	"context"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/uninstall"
)

// leasesGone fails every list of vmmac leases as the apiserver does once their CRD is
// gone, which may happen before the vmmacs' own CRD goes during an uninstall.
var leasesGone = interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*v1alpha2.VirtualMachineMACAddressLeaseList); ok {
		return apierrors.NewNotFound(schema.GroupResource{Group: v1alpha2.GroupVersion.Group, Resource: "virtualmachinemacaddressleases"}, "")
	}
	return c.List(ctx, list, opts...)
}}

func uninstallClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, v1alpha2.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).
		WithIndex(&v1alpha2.VirtualMachine{}, IndexVMMACName, func(client.Object) []string { return nil }).
		WithInterceptorFuncs(leasesGone).Build()
}

// deleted deletes o (which carries a finalizer, so it stays with a deletion timestamp).
func deleted(t *testing.T, c client.Client, o client.Object) {
	t.Helper()
	if err := c.Delete(context.Background(), o); err != nil {
		t.Fatal(err)
	}
}

// TestUninstallReleasesVMMACAtOnce: while Ferry is uninstalled (the vmmacs' CRD being
// deleted) a deleted vmmac goes at once, even when its leases' CRD went first and they
// can no longer be listed. Before, freeing its leases failed at every retry and the
// vmmac held its CRD until `ferry uninstall` gave up.
func TestUninstallReleasesVMMACAtOnce(t *testing.T) {
	ctx := context.Background()
	crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: uninstall.CRDMACAddresses, Finalizers: []string{"customresourcecleanup.apiextensions.k8s.io"}}}
	mac := &v1alpha2.VirtualMachineMACAddress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "vm-a-mac",
		Finalizers: []string{v1alpha2.FinalizerMACAddress}}, Status: v1alpha2.VirtualMachineMACAddressStatus{Address: "02:ab:cd:00:00:01"}}
	c := uninstallClient(t, crd, mac)
	deleted(t, c, crd)
	deleted(t, c, mac)
	r := &Reconciler{Client: c, APIReader: c}
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mac)}); err != nil {
		t.Fatalf("reconcile of a deleted vmmac while its CRD goes: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mac), mac); !apierrors.IsNotFound(err) {
		t.Fatalf("the vmmac is still there (finalizers %v, err %v), want it gone", mac.Finalizers, err)
	}
}

// TestFreeLeasesWithoutLeaseCRD: a vmmac deleted outside an uninstall whose leases' CRD is
// gone has no lease left to free: its finalizer goes.
func TestFreeLeasesWithoutLeaseCRD(t *testing.T) {
	ctx := context.Background()
	mac := &v1alpha2.VirtualMachineMACAddress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "m",
		Finalizers: []string{v1alpha2.FinalizerMACAddress}}}
	c := uninstallClient(t, mac)
	deleted(t, c, mac)
	r := &Reconciler{Client: c, APIReader: c}
	if _, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mac)}); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mac), mac); !apierrors.IsNotFound(err) {
		t.Fatalf("the vmmac is still there (finalizers %v, err %v), want it gone", mac.Finalizers, err)
	}
}
