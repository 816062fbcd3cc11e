package uninstall

import (
	"context"
	"slices"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func newClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, v1alpha2.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
}

// TestTerminating: a CRD counts as being uninstalled only when it is there with a
// deletion timestamp; a missing one, or no reader, is not.
func TestTerminating(t *testing.T) {
	ctx := context.Background()
	crd := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: CRDDisks, Finalizers: []string{"customresourcecleanup.apiextensions.k8s.io"}}}
	c := newClient(t, crd)
	if Terminating(ctx, nil, CRDDisks) || Terminating(ctx, c, CRDImages) || Terminating(ctx, c, CRDDisks) {
		t.Fatal("terminating without a reader, a CRD, or a deletion")
	}
	if err := c.Delete(ctx, crd); err != nil {
		t.Fatal(err)
	}
	if !Terminating(ctx, c, CRDDisks) {
		t.Fatal("a CRD being deleted does not count as terminating")
	}
}

// TestRelease removes Ferry's finalizers and keeps the others.
func TestRelease(t *testing.T) {
	ctx := context.Background()
	d := &v1alpha2.VirtualDisk{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "d",
		Finalizers: []string{"example.com/keep", v1alpha2.FinalizerStorage}}}
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "vm", Finalizers: []string{v1alpha2.FinalizerVM}}}
	c := newClient(t, d, vm)
	for _, o := range []client.Object{d, vm} {
		if err := Release(ctx, c, o); err != nil {
			t.Fatal(err)
		}
	}
	var got v1alpha2.VirtualDisk
	if err := c.Get(ctx, client.ObjectKeyFromObject(d), &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Finalizers, []string{"example.com/keep"}) {
		t.Errorf("disk finalizers %v, want only example.com/keep", got.Finalizers)
	}
	var gotVM v1alpha2.VirtualMachine
	if err := c.Get(ctx, client.ObjectKeyFromObject(vm), &gotVM); err != nil {
		t.Fatal(err)
	}
	if len(gotVM.Finalizers) != 0 {
		t.Errorf("VM finalizers %v, want none", gotVM.Finalizers)
	}
}
