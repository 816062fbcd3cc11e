package vm

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// passthroughView is what the VM's passthrough devices (spec.usbDevices, spec.gpus) allow:
// Ferry has neither USB nor GPU passthrough, so a VM that names any does not start, and
// its status says why, instead of starting without the device the guest expects. A VM
// already running when one is added runs on.
type passthroughView struct {
	blocked bool
	reason  string
	message string
	gpu     string // GPUClassReady's message; empty: no GPUs asked for
}

// observePassthrough reads spec.usbDevices and spec.gpus.
func (r *Reconciler) observePassthrough(_ context.Context, s *scope) error {
	s.passthrough = passthroughOf(&s.vm.Spec)
	return nil
}

func passthroughOf(spec *v1alpha2.VirtualMachineSpec) passthroughView {
	var v passthroughView
	if n := len(spec.GPUs); n > 0 {
		names := make([]string, n)
		for i, g := range spec.GPUs {
			names[i] = g.GPUClassName
		}
		v.gpu = fmt.Sprintf("GPUClass %s not found: Ferry has no GPU passthrough (no GPU DRA provider or GPUClass kind in this cluster); remove spec.gpus to start the VM without a GPU",
			quoteList(names))
		v.blocked, v.reason, v.message = true, v1alpha2.ReasonGPUClassNotFound, v.gpu
	}
	if n := len(spec.USBDevices); n > 0 {
		names := make([]string, n)
		for i, u := range spec.USBDevices {
			names[i] = u.Name
		}
		msg := fmt.Sprintf("USBDevice %s not found: Ferry has no USB passthrough (no NodeUSBDevice or USBDevice kinds: it does not discover USB devices on nodes); remove spec.usbDevices to start the VM without them",
			quoteList(names))
		if !v.blocked {
			v.blocked, v.reason, v.message = true, v1alpha2.ReasonUSBDeviceNotFound, msg
		} else {
			v.message += "; " + msg
		}
	}
	return v
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// derivePassthrough sets GPUClassReady (only while the VM asks for GPUs, as Deckhouse) and
// status.usbDevices.
func derivePassthrough(s *scope) {
	st := &s.vm.Status
	v := passthroughOf(&s.vm.Spec) // from the spec alone: also when the reconcile stopped early
	if v.gpu == "" {
		meta.RemoveStatusCondition(&st.Conditions, v1alpha2.VMConditionGPUClassReady)
	} else {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: v1alpha2.VMConditionGPUClassReady, Status: metav1.ConditionFalse,
			Reason: v1alpha2.ReasonGPUClassNotFound, Message: v.gpu, ObservedGeneration: s.vm.Generation})
	}
	st.USBDevices = nil
	for _, u := range s.vm.Spec.USBDevices {
		st.USBDevices = append(st.USBDevices, v1alpha2.USBDeviceStatusRef{Name: u.Name})
	}
}
