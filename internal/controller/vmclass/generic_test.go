package vmclass

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// generic is installed once: an administrator's edits stay, and a class the administrator
// deleted is not made again, across restarts (as Deckhouse's installer does).
func TestGenericIsInstalledOnce(t *testing.T) {
	ctx := context.Background()
	s := runtime.NewScheme()
	_ = v1alpha2.AddToScheme(s)
	_ = corev1.AddToScheme(s)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ferry-system"}}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(ns).Build()

	if err := installGeneric(ctx, c, c, "ferry-system"); err != nil {
		t.Fatal(err)
	}
	got := &v1alpha2.VirtualMachineClass{}
	if err := c.Get(ctx, client.ObjectKey{Name: "generic"}, got); err != nil {
		t.Fatalf("generic: %v", err)
	}
	if got.Spec.CPU.Model != "Nehalem" || len(got.Spec.SizingPolicies) != 4 {
		t.Errorf("generic's spec %+v; want Deckhouse's (Nehalem, 4 policies)", got.Spec)
	}
	// Edited, then a restart: the edit stays.
	got.Spec.SizingPolicies = got.Spec.SizingPolicies[:1]
	if err := c.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := installGeneric(ctx, c, c, "ferry-system"); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "generic"}, got); err != nil || len(got.Spec.SizingPolicies) != 1 {
		t.Errorf("after a restart: %d policies, %v; want the administrator's 1", len(got.Spec.SizingPolicies), err)
	}
	// Deleted, then a restart: it stays deleted.
	if err := c.Delete(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := installGeneric(ctx, c, c, "ferry-system"); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "generic"}, got); !apierrors.IsNotFound(err) {
		t.Errorf("deleted generic came back: %v", err)
	}
}

// An administrator who made generic before Ferry's first start keeps theirs.
func TestGenericOfTheAdministratorIsKept(t *testing.T) {
	ctx := context.Background()
	s := runtime.NewScheme()
	_ = v1alpha2.AddToScheme(s)
	_ = corev1.AddToScheme(s)
	mine := Generic()
	mine.Spec.CPU = v1alpha2.CPU{Type: v1alpha2.CPUTypeHost}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(mine).Build()
	if err := installGeneric(ctx, c, c, "ferry-system"); err != nil {
		t.Fatal(err)
	}
	got := &v1alpha2.VirtualMachineClass{}
	if err := c.Get(ctx, client.ObjectKey{Name: "generic"}, got); err != nil || got.Spec.CPU.Type != v1alpha2.CPUTypeHost {
		t.Errorf("generic %+v, %v; want the administrator's (Host)", got.Spec.CPU, err)
	}
}
