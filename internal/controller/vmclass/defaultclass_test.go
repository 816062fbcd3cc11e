package vmclass

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

func testScheme(t testing.TB) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := v1alpha2.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// class is a class with annotation value mark ("": none).
func class(name, mark string) *v1alpha2.VirtualMachineClass {
	c := &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if mark != "" {
		c.Annotations = map[string]string{v1alpha2.AnnotationDefaultClass: mark}
	}
	return c
}

func classRequest(t *testing.T, op admissionv1.Operation, obj, old *v1alpha2.VirtualMachineClass) admission.Request {
	t.Helper()
	raw := func(c *v1alpha2.VirtualMachineClass) runtime.RawExtension {
		if c == nil {
			return runtime.RawExtension{}
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return runtime.RawExtension{Raw: b}
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Operation: op, Name: obj.Name, Object: raw(obj), OldObject: raw(old)}}
}

// TestWebhookKeepsOneDefaultClass: a class may become the default only while no other
// is; the refusal names the other and says to remove its annotation first. Values other
// than "true" are not a default; a class already the default is not checked again; one
// being deleted counts no more.
func TestWebhookKeepsOneDefaultClass(t *testing.T) {
	s := testScheme(t)
	leaving := class("old-default", "true")
	leaving.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	leaving.Finalizers = []string{v1alpha2.FinalizerVMClass}
	for _, c := range []struct {
		name     string
		world    []client.Object
		op       admissionv1.Operation
		obj, old *v1alpha2.VirtualMachineClass
		want     string // "" allowed, else parts of the refusal, "|"-separated
	}{
		{"first default, created", []client.Object{class("generic", "")}, admissionv1.Create, class("custom", "true"), nil, ""},
		{"first default, annotated", []client.Object{class("generic", ""), class("custom", "")}, admissionv1.Update, class("custom", "true"), class("custom", ""), ""},
		{"second default, created", []client.Object{class("custom", "true")}, admissionv1.Create, class("other", "true"), nil,
			"VirtualMachineClass custom is already the default|remove the annotation from it first|kubectl annotate vmclass custom " + v1alpha2.AnnotationDefaultClass + "-"},
		{"second default, annotated", []client.Object{class("custom", "true"), class("other", "")}, admissionv1.Update, class("other", "true"), class("other", ""),
			"VirtualMachineClass custom is already the default"},
		{"annotation removed from the other first", []client.Object{class("custom", "false"), class("other", "")}, admissionv1.Update, class("other", "true"), class("other", ""), ""},
		{"another value is not a default", []client.Object{class("custom", "true")}, admissionv1.Create, class("other", "yes"), nil, ""},
		{"the other's value is not true", []client.Object{class("custom", "True")}, admissionv1.Create, class("other", "true"), nil, ""},
		{"already the default, other edits", []client.Object{class("custom", "true"), class("other", "true")}, admissionv1.Update, class("other", "true"), class("other", "true"), ""},
		{"the other is being deleted", []client.Object{leaving}, admissionv1.Create, class("other", "true"), nil, ""},
		{"the same class stored", []client.Object{class("custom", "true")}, admissionv1.Create, class("custom", "true"), nil, ""},
		{"unmarked", []client.Object{class("custom", "true")}, admissionv1.Create, class("other", ""), nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := &Webhook{APIReader: fake.NewClientBuilder().WithScheme(s).WithObjects(c.world...).Build(), Decoder: admission.NewDecoder(s)}
			resp := w.Handle(context.Background(), classRequest(t, c.op, c.obj, c.old))
			if c.want == "" {
				if !resp.Allowed {
					t.Fatalf("refused: %+v", resp.Result)
				}
				return
			}
			if resp.Allowed {
				t.Fatalf("allowed; want a refusal saying %q", c.want)
			}
			for _, part := range strings.Split(c.want, "|") {
				if !strings.Contains(resp.Result.Message, part) {
					t.Errorf("refusal %q lacks %q", resp.Result.Message, part)
				}
			}
		})
	}
}

// TestDefaultFor: the default class, generic while none, and an error naming both when
// two are marked.
func TestDefaultFor(t *testing.T) {
	s := testScheme(t)
	for _, c := range []struct {
		name  string
		world []client.Object
		want  string
		err   string
	}{
		{"none", []client.Object{class("generic", ""), class("custom", "false")}, "generic", ""},
		{"one", []client.Object{class("generic", ""), class("custom", "true")}, "custom", ""},
		{"two", []client.Object{class("b", "true"), class("a", "true")}, "", "VirtualMachineClasses a, b are all annotated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := DefaultFor(context.Background(), fake.NewClientBuilder().WithScheme(s).WithObjects(c.world...).Build())
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("%q, %v; want an error saying %q", got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("%q, %v; want %q", got, err, c.want)
			}
		})
	}
}
