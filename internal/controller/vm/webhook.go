package vm

import (
	"context"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// WebhookPath is where the VirtualMachine validating webhook is served.
const WebhookPath = "/validate-virtualmachine"

// Webhook refuses a VM whose requested address cannot be its own: outside the VM range,
// held by another VM, or a change of the address of a VM that holds one. The address
// lease stays the guard against two VMs asking at once (see ensureAddress); this only
// says so before the VM is stored.
type Webhook struct {
	// APIReader reads leases past any cache.
	APIReader client.Reader
	Range     ipam.Range
	Decoder   admission.Decoder
}

// Handle validates one VirtualMachine create or update.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	vm := &v1alpha2.VirtualMachine{}
	if err := w.Decoder.DecodeRaw(req.Object, vm); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	want := vm.Spec.VirtualMachineIPAddress
	if want == "" {
		return admission.Allowed("")
	}
	if req.Operation == admissionv1.Update {
		old := &v1alpha2.VirtualMachine{}
		if err := w.Decoder.DecodeRaw(req.OldObject, old); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
		if held := old.Status.IPAddress; held != "" && held != want {
			return admission.Denied(fmt.Sprintf("spec.virtualMachineIPAddress: the VM holds %s; its address cannot change while it holds one (leave it at %s or empty, or delete and recreate the VM)", held, held))
		}
		if old.Spec.VirtualMachineIPAddress == want {
			return admission.Allowed("")
		}
	}
	if err := w.Range.Check(want); err != nil {
		return admission.Denied("spec.virtualMachineIPAddress: " + err.Error() + "; choose an address of the range or leave it empty to get a free one")
	}
	lease := &v1alpha2.VirtualMachineIPAddressLease{}
	err := w.APIReader.Get(ctx, client.ObjectKey{Name: ipam.LeaseName(want)}, lease)
	switch {
	case apierrors.IsNotFound(err):
		return admission.Allowed("")
	case err != nil:
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("reading the lease of %s: %w", want, err))
	}
	if ref := lease.Spec.VirtualMachineRef; ref.Namespace != vm.Namespace || ref.Name != vm.Name {
		return admission.Denied(fmt.Sprintf("spec.virtualMachineIPAddress: %s is already held by VM %s/%s; choose another address or leave it empty to get a free one", want, ref.Namespace, ref.Name))
	}
	return admission.Allowed("")
}
