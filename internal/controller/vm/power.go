package vm

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// SetPowerState records a power request (PowerOn or PowerOff) on the VM's annotation,
// which is how Start/Stop operations and guest shutdowns tell this controller what the
// user wants. vm is updated in place; the write touches only that annotation.
func SetPowerState(ctx context.Context, c client.Client, vm *v1alpha2.VirtualMachine, power string) error {
	if vm.Annotations[v1alpha2.AnnotationPowerState] == power {
		return nil
	}
	cp := vm.DeepCopy()
	patch := client.MergeFromWithOptions(vm.DeepCopy(), client.MergeFromWithOptimisticLock{})
	if cp.Annotations == nil {
		cp.Annotations = map[string]string{}
	}
	cp.Annotations[v1alpha2.AnnotationPowerState] = power
	// Locked to the version the caller read: a decision made on a stale VM is retried.
	if err := c.Patch(ctx, cp, patch); err != nil {
		return fmt.Errorf("recording power state %s on VM %s: %w", power, vm.Name, err)
	}
	if vm.Annotations == nil {
		vm.Annotations = map[string]string{}
	}
	vm.Annotations[v1alpha2.AnnotationPowerState] = power
	vm.ResourceVersion = cp.ResourceVersion
	return nil
}
