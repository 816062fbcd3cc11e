package vmclass

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// WebhookPath is where the VirtualMachineClass validating webhook is served.
const WebhookPath = "/validate-virtualmachineclass"

// IsDefault tells whether c is marked the default class: its AnnotationDefaultClass is
// "true" (another value means not default, as in Deckhouse) and it is not being deleted
// (a class on its way out takes no new VMs).
func IsDefault(c *v1alpha2.VirtualMachineClass) bool {
	return c.Annotations[v1alpha2.AnnotationDefaultClass] == v1alpha2.DefaultClassValue && c.DeletionTimestamp.IsZero()
}

// Defaults are the names of the classes marked default, sorted. The class webhook keeps
// them to one; more than one means two were marked at the same instant, or while the
// webhook did not run.
func Defaults(ctx context.Context, c client.Reader) ([]string, error) {
	var list v1alpha2.VirtualMachineClassList
	if err := c.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing VirtualMachineClasses: %w", err)
	}
	var out []string
	for i := range list.Items {
		if IsDefault(&list.Items[i]) {
			out = append(out, list.Items[i].Name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// DefaultFor is the class a VM created without spec.virtualMachineClassName gets: the
// default class, or generic while there is none. More than one default is an error that
// names them and says what to do: which one the VM should get is the administrator's to
// say, not Ferry's to guess.
func DefaultFor(ctx context.Context, c client.Reader) (string, error) {
	defaults, err := Defaults(ctx, c)
	if err != nil {
		return "", err
	}
	switch len(defaults) {
	case 0:
		return v1alpha2.GenericClassName, nil
	case 1:
		return defaults[0], nil
	}
	return "", &TooManyDefaultsError{Classes: defaults}
}

// TooManyDefaultsError says that several classes are marked default.
type TooManyDefaultsError struct{ Classes []string }

func (e *TooManyDefaultsError) Error() string {
	return fmt.Sprintf("VirtualMachineClasses %s are all annotated %s=%s, and a cluster has one default class: remove the annotation from all but one (kubectl annotate vmclass NAME %s-), or name a class in spec.virtualMachineClassName",
		strings.Join(e.Classes, ", "), v1alpha2.AnnotationDefaultClass, v1alpha2.DefaultClassValue, v1alpha2.AnnotationDefaultClass)
}

// Webhook refuses a VirtualMachineClass that would become a second default class: the
// guide's way to move the default is to remove the annotation from one class and then
// add it to another, and the refusal names the class to remove it from. A class that is
// already the default is not checked again (its other edits, and the removal of its
// finalizer, go through even if two defaults were made while the webhook did not run).
// Two classes marked at the same instant may both pass; VMs without a class are then
// refused, naming both, until one is unmarked (DefaultFor).
type Webhook struct {
	// APIReader lists the classes past any cache: a default marked a moment ago counts.
	APIReader client.Reader
	Decoder   admission.Decoder
}

// Handle validates one VirtualMachineClass create or update.
func (w *Webhook) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	class := &v1alpha2.VirtualMachineClass{}
	if err := w.Decoder.DecodeRaw(req.Object, class); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	if !IsDefault(class) {
		return admission.Allowed("")
	}
	if req.Operation == admissionv1.Update {
		old := &v1alpha2.VirtualMachineClass{}
		if err := w.Decoder.DecodeRaw(req.OldObject, old); err != nil {
			return admission.Errored(http.StatusBadRequest, err)
		}
		if IsDefault(old) {
			return admission.Allowed("")
		}
	}
	defaults, err := Defaults(ctx, w.APIReader)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	var others []string
	for _, name := range defaults {
		if name != class.Name {
			others = append(others, name)
		}
	}
	if len(others) == 0 {
		return admission.Allowed("")
	}
	return admission.Denied(fmt.Sprintf("metadata.annotations[%s]: VirtualMachineClass %s is already the default class, and a cluster has one: remove the annotation from it first (kubectl annotate vmclass %s %s-), then set it here",
		v1alpha2.AnnotationDefaultClass, strings.Join(others, ", "), strings.Join(others, " "), v1alpha2.AnnotationDefaultClass))
}
