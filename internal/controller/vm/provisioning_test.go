package vm

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func TestLauncherArg(t *testing.T) {
	for d, want := range map[attachedDisk]string{
		{Path: "/s/d.qcow2", Format: "qcow2"}:             "/s/d.qcow2:qcow2",
		{Path: "/s/i.img", Format: "raw:ro"}:              "/s/i.img:raw:ro",
		{Path: "/s/seed.iso", Format: "raw", CDROM: true}: "/s/seed.iso:raw:cdrom",
		{Path: "/s/seed.iso", CDROM: true}:                "/s/seed.iso:cdrom",
		{Path: "/s/plain"}:                                "/s/plain",
	} {
		if got := d.launcherArg(); got != want {
			t.Errorf("%+v: %q, want %q", d, got, want)
		}
	}
}

func TestPodsName(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Args: []string{"launcher", "--disk", "/s/a.iso:raw:cdrom"}}}}}
	if !podsName([]*corev1.Pod{nil, pod}, "/s/a.iso") {
		t.Error("the pod's seed not seen")
	}
	// A longer name that starts with the path is another file.
	if podsName([]*corev1.Pod{pod}, "/s/a") {
		t.Error("a prefix of the path taken for the file")
	}
}

func TestDeriveProvisioning(t *testing.T) {
	vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
	r := &Reconciler{}
	r.deriveProvisioning(&scope{vm: vm, provReady: true})
	if len(vm.Status.Conditions) != 0 {
		t.Fatalf("a VM without provisioning got %+v", vm.Status.Conditions)
	}

	vm.Spec.Provisioning = &v1alpha2.Provisioning{Type: v1alpha2.ProvisioningUserDataRef}
	r.deriveProvisioning(&scope{vm: vm, provMessage: `Secret "x" not found`})
	c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionProvisioningReady)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha2.ReasonProvisioningNotReady || c.ObservedGeneration != 3 {
		t.Fatalf("condition %+v", c)
	}
	// A reconcile that stopped before provisioning keeps what the last one found.
	r.deriveProvisioning(&scope{vm: vm})
	if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionProvisioningReady); c.Message != `Secret "x" not found` {
		t.Fatalf("condition overwritten: %+v", c)
	}
	r.deriveProvisioning(&scope{vm: vm, provReady: true, provMessage: "seed attached"})
	if c := meta.FindStatusCondition(vm.Status.Conditions, v1alpha2.VMConditionProvisioningReady); c.Status != metav1.ConditionTrue || c.Reason != v1alpha2.ReasonProvisioningReady {
		t.Fatalf("condition %+v", c)
	}

	vm.Spec.Provisioning = nil
	r.deriveProvisioning(&scope{vm: vm, provReady: true})
	if len(vm.Status.Conditions) != 0 {
		t.Fatalf("condition left after provisioning was removed: %+v", vm.Status.Conditions)
	}
}
