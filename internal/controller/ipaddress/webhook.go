package ipaddress

import (
	"context"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// WebhookPath is where the VirtualMachineIPAddress validating webhook is served.
const WebhookPath = "/validate-virtualmachineipaddress"

// Webhook refuses a VirtualMachineIPAddress whose static address cannot be its own
// (outside the VM range, or held by another), and a change of the address of one that
// is bound. The schema checks the rest (type, staticIP's form); the lease stays the guard
// against two asking at once, this only says so before the object is stored.
type Webhook struct {
	// APIReader reads leases and vmips past any cache.
	APIReader client.Reader
	Ranges    ipam.Ranges
	Decoder   admission.Decoder
}

// Handle validates one VirtualMachineIPAddress create or update.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	ip := &v1alpha2.VirtualMachineIPAddress{}
	if err := w.Decoder.DecodeRaw(req.Object, ip); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if req.Operation == admissionv1.Update {
		old := &v1alpha2.VirtualMachineIPAddress{}
		if err := w.Decoder.DecodeRaw(req.OldObject, old); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
		if old.Spec == ip.Spec {
			return admission.Allowed("")
		}
		if why := changeRefused(old, ip); why != "" {
			return admission.Denied(why)
		}
		if ip.Spec.Type == v1alpha2.VirtualMachineIPAddressTypeStatic && old.Spec.StaticIP == ip.Spec.StaticIP {
			return admission.Allowed("")
		}
	}
	if ip.Spec.Type != v1alpha2.VirtualMachineIPAddressTypeStatic || ip.Spec.StaticIP == "" {
		return admission.Allowed("")
	}
	addr := ip.Spec.StaticIP
	if err := w.Ranges.Check(addr); err != nil {
		return admission.Denied("spec.staticIP: " + err.Error() + "; choose an address of a VM address range, or type Auto to get a free one")
	}
	maker, err := MakerUID(ctx, w.APIReader, ip)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	problem, err := Problem(ctx, w.APIReader, addr, Taker{Namespace: ip.Namespace, Name: ip.Name, VMUID: maker}, nil)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if problem != "" {
		return admission.Denied("spec.staticIP: " + problem + "; choose another address, or type Auto to get a free one")
	}
	return admission.Allowed("")
}

// changeRefused says why the spec of a bound vmip cannot change so ("" if it can): its
// address is its lease's. Auto may become Static on the address it holds (Deckhouse's one
// allowed change: it keeps the address for good).
func changeRefused(old, ip *v1alpha2.VirtualMachineIPAddress) string {
	held := old.Status.Address
	if !IsTrue(old.Status.Conditions, v1alpha2.IPAddressConditionBound) || held == "" {
		return ""
	}
	switch {
	case old.Spec.Type == v1alpha2.VirtualMachineIPAddressTypeAuto && ip.Spec.Type == v1alpha2.VirtualMachineIPAddressTypeStatic:
		if ip.Spec.StaticIP != held {
			return fmt.Sprintf("spec.staticIP: the VirtualMachineIPAddress is bound to %s; type Auto may become Static only with staticIP %s (create another VirtualMachineIPAddress for another address)", held, held)
		}
	case old.Spec.Type != ip.Spec.Type:
		return fmt.Sprintf("spec.type: the VirtualMachineIPAddress is bound to %s; its type cannot change from %s to %s", held, old.Spec.Type, ip.Spec.Type)
	case ip.Spec.StaticIP != old.Spec.StaticIP:
		return fmt.Sprintf("spec.staticIP: the VirtualMachineIPAddress is bound to %s; its address cannot change (create another VirtualMachineIPAddress for another address)", held)
	}
	return ""
}
