package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/ferryvm/ferry/internal/controller/vmclass"
)

// DefaultingPath is where the VirtualMachine mutating webhook is served.
const DefaultingPath = "/mutate-virtualmachine"

// Defaulter fills spec.virtualMachineClassName of a VM created without one, as Deckhouse
// does at admission: the class annotated is-default-class=true, or generic while none is
// (vmclass.DefaultFor). The apiserver calls it before the validating webhooks, so Webhook
// checks the VM's sizing against the class it was given. Only creation: a stored VM's
// class changes only when its owner changes it.
type Defaulter struct {
	// APIReader lists the classes past any cache: a default marked a moment ago counts.
	APIReader client.Reader
}

// Handle answers one VirtualMachine create with the patch that names its class, or none.
func (d *Defaulter) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create {
		return admission.Allowed("")
	}
	// The VM is edited as JSON, not decoded into the Go type and written back: the patch
	// then adds the class and nothing else (no field the type would zero or drop).
	// Numbers stay as written (UseNumber): no float64 rounding of a large one.
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(req.Object.Raw))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	spec, ok := obj["spec"].(map[string]any)
	if !ok {
		return admission.Allowed("") // no spec: the schema refuses the VM, not this
	}
	if name, set := spec["virtualMachineClassName"]; set && name != "" {
		return admission.Allowed("")
	}
	class, err := vmclass.DefaultFor(ctx, d.APIReader)
	if tooMany := (*vmclass.TooManyDefaultsError)(nil); errors.As(err, &tooMany) {
		return admission.Denied("spec.virtualMachineClassName is empty and no single class is the default: " + err.Error())
	} else if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	spec["virtualMachineClassName"] = class
	patched, err := json.Marshal(obj)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	return admission.PatchResponseFromRaw(req.Object.Raw, patched)
}
