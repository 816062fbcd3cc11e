package vmclass

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// Generic is the class Ferry installs, Deckhouse's generic: the Nehalem CPU model, a CPU
// of 2008 that every x86-64 node of a cluster has in common, so its VMs start and migrate
// anywhere, and Deckhouse's sizing policies. QEMU's TCG (no KVM; QEMU 7.2, Debian 12)
// emulates every Nehalem feature: QEMU starts `-cpu Nehalem,enforce` under TCG (see
// hypervisor's TestClassCPUsUnderTCG), so the same class serves clusters with and without KVM.
func Generic() *v1alpha2.VirtualMachineClass {
	policy := func(lo, hi int, dedicated []bool, fractions ...v1alpha2.CoreFractionValue) v1alpha2.SizingPolicy {
		return v1alpha2.SizingPolicy{Cores: &v1alpha2.SizingPolicyCores{Min: lo, Max: hi}, DedicatedCores: dedicated, CoreFractions: fractions}
	}
	return &v1alpha2.VirtualMachineClass{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha2.GroupVersion.String(), Kind: v1alpha2.VirtualMachineClassKind},
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha2.GenericClassName},
		Spec: v1alpha2.VirtualMachineClassSpec{
			CPU: v1alpha2.CPU{Type: v1alpha2.CPUTypeModel, Model: "Nehalem"},
			SizingPolicies: []v1alpha2.SizingPolicy{
				policy(1, 4, []bool{false}, 5, 10, 20, 50, 100),
				policy(5, 8, []bool{false}, 20, 50, 100),
				policy(9, 16, []bool{true, false}, 50, 100),
				policy(17, 1024, []bool{true, false}, 100),
			},
		},
	}
}

// InstallRecord is the ConfigMap (in Ferry's namespace) that records that generic was
// installed; its key GenericInstalledKey holds when.
const (
	InstallRecord       = "ferry-install-state"
	GenericInstalledKey = "vmClassGenericInstalledAt"
)

// genericInstaller creates generic once: at the first start of the first controller that
// leads (an install), never again, as Deckhouse's installer does (a hook that keeps the
// same record in a Secret). An administrator may edit the class (all but spec.cpu) or
// delete it; a restart or an upgrade of Ferry neither overwrites nor recreates it.
type genericInstaller struct {
	client    client.Client
	reader    client.Reader
	namespace string
}

// NeedLeaderElection: only the leading replica installs.
func (g *genericInstaller) NeedLeaderElection() bool { return true }

// Start installs generic if it never was, retrying while the apiserver fails; it ends
// with ctx or once done.
func (g *genericInstaller) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("vmclass-generic")
	_ = wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := installGeneric(ctx, g.client, g.reader, g.namespace); err != nil {
			log.Error(err, "Could not install the VirtualMachineClass generic; retrying")
			return false, nil
		}
		return true, nil
	})
	return nil
}

// installGeneric creates generic and the record that it did, unless the record exists.
// Without Ferry's namespace (a controller run outside an install) generic is created
// when absent and no record is kept.
func installGeneric(ctx context.Context, c client.Client, reader client.Reader, namespace string) error {
	rec := &corev1.ConfigMap{}
	err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: InstallRecord}, rec)
	switch {
	case err == nil && rec.Data[GenericInstalledKey] != "":
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("reading the install record %s/%s: %w", namespace, InstallRecord, err)
	}
	if err := c.Create(ctx, Generic()); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the VirtualMachineClass generic: %w", err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	if rec.Name == "" {
		rec = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: InstallRecord},
			Data: map[string]string{GenericInstalledKey: now}}
		err = c.Create(ctx, rec)
	} else {
		if rec.Data == nil {
			rec.Data = map[string]string{}
		}
		rec.Data[GenericInstalledKey] = now
		err = c.Update(ctx, rec)
	}
	if apierrors.IsNotFound(err) {
		ctrl.LoggerFrom(ctx).Info("Created the VirtualMachineClass generic; no namespace to record it in", "namespace", namespace)
		return nil
	}
	return err
}
