package vm

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/ipaddress"
	"github.com/ferryvm/ferry/internal/ipam"
)

// WebhookPath is where the VirtualMachine validating webhook is served.
const WebhookPath = "/validate-virtualmachine"

// Webhook refuses a VM whose cores, memory or coreFraction its class's sizing policies do
// not allow (classRefusal), and one whose address cannot be its own: both address fields
// set, an invalid VirtualMachineIPAddress name, a Ferry-only spec.virtualMachineIPAddress
// outside the VM address ranges or held by another. A change of either while the VM runs
// awaits its restart.
// The lease stays the guard against two VMs asking at once (package ipaddress); this only
// says so before the VM is stored.
type Webhook struct {
	// APIReader reads leases, VirtualMachineIPAddresses and classes past any cache.
	APIReader client.Reader
	Ranges    ipam.Ranges
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
	if resp, done := w.checkAttachments(ctx, req, vm); done {
		return resp
	}
	if msg, err := w.classRefusal(ctx, req, vm); err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	} else if msg != "" {
		return admission.Denied(msg)
	}
	want, name := vm.Spec.VirtualMachineIPAddress, vm.Spec.VirtualMachineIPAddressName
	if req.Operation == admissionv1.Update {
		old := &v1alpha2.VirtualMachine{}
		if err := w.Decoder.DecodeRaw(req.OldObject, old); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
		if old.Spec.VirtualMachineIPAddress == want && old.Spec.VirtualMachineIPAddressName == name {
			return admission.Allowed("")
		}
		// A running VM keeps the address it runs with: a new one is a change that awaits
		// its restart (restartAwaitingChanges), as in Deckhouse's guide, which gives an
		// existing VM a vmip by editing it.
	}
	if want != "" && name != "" {
		return admission.Denied("spec.virtualMachineIPAddress and spec.virtualMachineIPAddressName: set one, not both (virtualMachineIPAddressName names a VirtualMachineIPAddress, e.g. one of type Static; virtualMachineIPAddress is Ferry's older way to ask for an address)")
	}
	if name != "" {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return admission.Denied(fmt.Sprintf("spec.virtualMachineIPAddressName: %q is not a valid VirtualMachineIPAddress name: %s", name, strings.Join(errs, "; ")))
		}
		return admission.Allowed("")
	}
	if want == "" {
		return admission.Allowed("")
	}
	if err := w.Ranges.Check(want); err != nil {
		return admission.Denied("spec.virtualMachineIPAddress: " + err.Error() + "; choose an address of a VM address range or leave it empty to get a free one")
	}
	// The VM's own vmip (made for it, or the one it uses) may hold the address already.
	mine := func(ip *v1alpha2.VirtualMachineIPAddress) bool {
		return ip.Namespace == vm.Namespace && (ip.Status.VirtualMachine == vm.Name || vm.UID != "" && ip.Labels[v1alpha2.LabelVirtualMachineUID] == string(vm.UID))
	}
	problem, err := ipaddress.Problem(ctx, w.APIReader, want, ipaddress.Taker{Namespace: vm.Namespace, VMUID: string(vm.UID)}, mine)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if problem != "" {
		return admission.Denied("spec.virtualMachineIPAddress: " + problem + "; choose another address or leave it empty to get a free one")
	}
	return admission.Allowed("")
}
