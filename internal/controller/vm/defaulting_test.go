package vm

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/vmclass"
	"github.com/ferryvm/ferry/internal/ipam"
)

// markedClass is a class of 1 or 2 cores, annotated default with value mark ("": not).
func markedClass(name, mark string) *v1alpha2.VirtualMachineClass {
	c := &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if mark != "" {
		c.Annotations = map[string]string{v1alpha2.AnnotationDefaultClass: mark}
	}
	c.Spec.CPU = v1alpha2.CPU{Type: v1alpha2.CPUTypeModel, Model: "Nehalem"}
	c.Spec.SizingPolicies = []v1alpha2.SizingPolicy{{Cores: &v1alpha2.SizingPolicyCores{Min: 1, Max: 2}}}
	return c
}

// classlessVM is a VM as a manifest without spec.virtualMachineClassName has it.
func classlessVM(cores int) []byte {
	return []byte(`{"apiVersion":"virtualization.deckhouse.io/v1alpha2","kind":"VirtualMachine","metadata":{"namespace":"a","name":"web"},` +
		`"spec":{"cpu":{"cores":` + itoa(cores) + `},"memory":{"size":"1Gi"},"blockDeviceRefs":[{"kind":"VirtualDisk","name":"root"}],` +
		`"someFieldFerryDoesNotKnow":{"big":12345678901234567890}}}`)
}

func itoa(n int) string { return strconv.Itoa(n) }

func create(raw []byte) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Operation: admissionv1.Create, Namespace: "a", Name: "web",
		Object: runtime.RawExtension{Raw: raw}}}
}

// applied is raw with resp's patch applied, as the apiserver does.
func applied(t *testing.T, raw []byte, resp admission.Response) []byte {
	t.Helper()
	if len(resp.Patches) == 0 {
		return raw
	}
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v, want JSONPatch", resp.PatchType)
	}
	ops, err := json.Marshal(resp.Patches)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("applying %s: %v", ops, err)
	}
	return out
}

// TestDefaulterNamesTheDefaultClass: a VM created without a class gets the class
// annotated default ("true" only), generic while none is, and is refused (naming both)
// while two are; a class it names is kept; updates are not touched. The patch adds the
// class and nothing else.
func TestDefaulterNamesTheDefaultClass(t *testing.T) {
	s := runtime.NewScheme()
	_ = v1alpha2.AddToScheme(s)
	named := []byte(`{"apiVersion":"virtualization.deckhouse.io/v1alpha2","kind":"VirtualMachine","metadata":{"namespace":"a","name":"web"},"spec":{"virtualMachineClassName":"mine","cpu":{"cores":1}}}`)
	for _, c := range []struct {
		name    string
		world   []client.Object
		req     admission.Request
		want    string // the class after the patch
		refusal string // a part of the refusal, or ""
	}{
		{"default class", []client.Object{vmclass.Generic(), markedClass("custom", "true")}, create(classlessVM(1)), "custom", ""},
		{"no default class", []client.Object{vmclass.Generic(), markedClass("custom", "")}, create(classlessVM(1)), "generic", ""},
		{"a value other than true", []client.Object{vmclass.Generic(), markedClass("custom", "yes")}, create(classlessVM(1)), "generic", ""},
		{"no class at all", nil, create(classlessVM(1)), "generic", ""},
		{"class named", []client.Object{markedClass("custom", "true")}, create(named), "mine", ""},
		{"two defaults", []client.Object{markedClass("b", "true"), markedClass("a", "true")}, create(classlessVM(1)), "",
			"VirtualMachineClasses a, b are all annotated"},
		{"update", []client.Object{markedClass("custom", "true")}, admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			Operation: admissionv1.Update, Object: runtime.RawExtension{Raw: classlessVM(1)}}}, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &Defaulter{APIReader: fake.NewClientBuilder().WithScheme(s).WithObjects(c.world...).Build()}
			resp := d.Handle(context.Background(), c.req)
			if c.refusal != "" {
				if resp.Allowed || !strings.Contains(resp.Result.Message, c.refusal) {
					t.Fatalf("allowed %v, %+v; want a refusal saying %q", resp.Allowed, resp.Result, c.refusal)
				}
				return
			}
			if !resp.Allowed {
				t.Fatalf("refused: %+v", resp.Result)
			}
			out := applied(t, c.req.Object.Raw, resp)
			var got, orig map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			_ = json.Unmarshal(c.req.Object.Raw, &orig)
			if class, _ := got["spec"].(map[string]any)["virtualMachineClassName"].(string); class != c.want {
				t.Errorf("class %q, want %q", class, c.want)
			}
			// Nothing but the class changed.
			delete(got["spec"].(map[string]any), "virtualMachineClassName")
			delete(orig["spec"].(map[string]any), "virtualMachineClassName")
			a, _ := json.Marshal(got)
			b, _ := json.Marshal(orig)
			if string(a) != string(b) {
				t.Errorf("the patch changed more than the class:\n%s\nwas\n%s", a, b)
			}
			if len(resp.Patches) > 1 {
				t.Errorf("patch %+v; want one operation", resp.Patches)
			}
		})
	}
}

// TestDefaultedVMIsCheckedAgainstItsDefaultClass runs the admission chain as the
// apiserver does (the mutating webhook, its patch applied, then the validating one): a
// VM without a class is sized against the default class it was given, and against
// generic while there is none.
func TestDefaultedVMIsCheckedAgainstItsDefaultClass(t *testing.T) {
	s := runtime.NewScheme()
	_ = v1alpha2.AddToScheme(s)
	r, err := ipam.ParseRanges(ipam.DefaultRanges)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		world   []client.Object
		cores   int
		refusal string
	}{
		{"fits the default class", []client.Object{vmclass.Generic(), markedClass("small", "true")}, 2, ""},
		{"too big for the default class", []client.Object{vmclass.Generic(), markedClass("small", "true")}, 4,
			`spec.cpu.cores: 4 is not allowed by VirtualMachineClass "small"`},
		{"no default: generic's policies", []client.Object{vmclass.Generic(), markedClass("small", "")}, 4, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			reader := fake.NewClientBuilder().WithScheme(s).WithObjects(c.world...).Build()
			d := &Defaulter{APIReader: reader}
			v := &Webhook{APIReader: reader, Ranges: r, Decoder: admission.NewDecoder(s)}
			req := create(classlessVM(c.cores))
			resp := d.Handle(context.Background(), req)
			if !resp.Allowed {
				t.Fatalf("mutating webhook refused: %+v", resp.Result)
			}
			req.Object.Raw = applied(t, req.Object.Raw, resp)
			resp = v.Handle(context.Background(), req)
			if c.refusal == "" {
				if !resp.Allowed {
					t.Fatalf("validating webhook refused: %+v", resp.Result)
				}
				return
			}
			if resp.Allowed || !strings.Contains(resp.Result.Message, c.refusal) {
				t.Fatalf("allowed %v, %+v; want a refusal saying %q", resp.Allowed, resp.Result, c.refusal)
			}
		})
	}
}
