package vm

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/usbdevice"
)

// passthroughView is what the VM's passthrough devices (spec.usbDevices, spec.gpus) allow:
// Ferry has neither USB nor GPU passthrough, so a VM that names any does not start, and
// its status says why (a USBDevice named is not found, or is not ready: absent on every
// node), instead of starting without the device the guest expects. A VM
// already running when one is added runs on.
type passthroughView struct {
	blocked bool
	reason  string
	message string
	gpu     string // GPUClassReady's message; empty: no GPUs asked for
}

// observePassthrough reads spec.usbDevices and spec.gpus, and which of the USBDevices
// named exist in the VM's namespace (from the cache).
func (r *Reconciler) observePassthrough(ctx context.Context, s *scope) error {
	var present map[string]bool
	for _, u := range s.vm.Spec.USBDevices {
		err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.vm.Namespace, Name: u.Name}, &v1alpha2.USBDevice{})
		switch {
		case err == nil:
			if present == nil {
				present = map[string]bool{}
			}
			present[u.Name] = true
		case !apierrors.IsNotFound(err):
			return fmt.Errorf("reading USBDevice %s/%s: %w", s.vm.Namespace, u.Name, err)
		}
	}
	s.passthrough = passthroughOf(s.vm.Namespace, &s.vm.Spec, present)
	return nil
}

// passthroughOf decides from the spec and the USBDevices of the VM's namespace that exist
// (present). Ferry discovers no USB device, so one that exists is never ready: its
// NodeUSBDevice was made by hand and is absent on every node (package usbdevice).
func passthroughOf(ns string, spec *v1alpha2.VirtualMachineSpec, present map[string]bool) passthroughView {
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
	if len(spec.USBDevices) > 0 {
		var missing, notReady []string
		for _, u := range spec.USBDevices {
			if present[u.Name] {
				notReady = append(notReady, u.Name)
			} else {
				missing = append(missing, u.Name)
			}
		}
		var parts []string
		reason := v1alpha2.ReasonUSBDeviceNotReady
		if len(missing) > 0 {
			reason = v1alpha2.ReasonUSBDeviceNotFound
			parts = append(parts, fmt.Sprintf("USBDevice %s not found in namespace %s", quoteList(missing), ns))
		}
		if len(notReady) == 1 {
			parts = append(parts, fmt.Sprintf("USBDevice %s is not ready: the device is absent on every node", quoteList(notReady)))
		} else if len(notReady) > 1 {
			parts = append(parts, fmt.Sprintf("USBDevices %s are not ready: the devices are absent on every node", quoteList(notReady)))
		}
		msg := strings.Join(parts, "; ") + " (Ferry has no USB passthrough: it does not discover USB devices on nodes); remove spec.usbDevices to start the VM without them"
		if !v.blocked {
			v.blocked, v.reason, v.message = true, reason, msg
		} else {
			v.message += "; " + msg
		}
	}
	return v
}

// vmsOfUSBDevice: the VMs of its namespace that name a USBDevice (made or deleted).
func (r *Reconciler) vmsOfUSBDevice(ctx context.Context, o client.Object) []reconcile.Request {
	var vms v1alpha2.VirtualMachineList
	if err := r.Client.List(ctx, &vms, client.InNamespace(o.GetNamespace())); err != nil {
		return nil
	}
	var out []reconcile.Request
	for _, name := range usbdevice.VMsNaming(vms.Items, o.GetName()) {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}})
	}
	return out
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
	v := passthroughOf(s.vm.Namespace, &s.vm.Spec, nil) // GPUs: from the spec alone: also when the reconcile stopped early
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
