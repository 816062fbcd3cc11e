package vm

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// FuzzDefaulter posts arbitrary bodies to the mutating VirtualMachine webhook (whoever may
// create a VM writes the object in it). The answer must be an AdmissionReview; a patch
// must apply to the object sent and change nothing but spec.virtualMachineClassName,
// which it sets to the default class, and only where the VM named none.
func FuzzDefaulter(f *testing.F) {
	s := k8sruntime.NewScheme()
	if err := v1alpha2.AddToScheme(s); err != nil {
		f.Fatal(err)
	}
	handler := &webhook.Admission{Handler: &Defaulter{APIReader: fake.NewClientBuilder().WithScheme(s).WithObjects(markedClass("custom", "true")).Build()}}
	review := func(op admissionv1.Operation, obj string) string {
		return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"7a4f","operation":"` + string(op) + `","object":` + obj + `}}`
	}
	f.Add(review(admissionv1.Create, string(classlessVM(1))))
	f.Add(review(admissionv1.Create, `{"spec":{"virtualMachineClassName":"mine"}}`))
	f.Add(review(admissionv1.Create, `{"spec":{"virtualMachineClassName":""}}`))
	f.Add(review(admissionv1.Create, `{"spec":{"virtualMachineClassName":7,"cpu":{"cores":1e400}}}`))
	f.Add(review(admissionv1.Create, `{"spec":[]}`))
	f.Add(review(admissionv1.Create, `{"spec":{"a/b~c":1}}`))
	f.Add(review(admissionv1.Create, `null`))
	f.Add(review(admissionv1.Update, `{"spec":{}}`))
	f.Add(`{"kind":"AdmissionReview"}`)
	f.Add(``)

	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, DefaultingPath, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		var out admissionv1.AdmissionReview
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out.Response == nil {
			t.Fatalf("answer %d %q to %q is no AdmissionReview with a response", rec.Code, rec.Body.Bytes(), body)
		}
		if !out.Response.Allowed && (out.Response.Result == nil || out.Response.Result.Message == "") {
			t.Fatalf("refused %q without saying why", body)
		}
		if len(out.Response.Patch) == 0 {
			return
		}
		var in admissionv1.AdmissionReview
		if json.Unmarshal([]byte(body), &in) != nil || in.Request == nil {
			t.Fatalf("patched %q, which has no request", body)
		}
		if in.Request.Operation != admissionv1.Create {
			t.Fatalf("patched a %s", in.Request.Operation)
		}
		p, err := jsonpatch.DecodePatch(out.Response.Patch)
		if err != nil {
			t.Fatalf("patch %q: %v", out.Response.Patch, err)
		}
		patched, err := p.Apply(in.Request.Object.Raw)
		if err != nil {
			t.Fatalf("patch %q does not apply to %q: %v", out.Response.Patch, in.Request.Object.Raw, err)
		}
		var before, after map[string]any
		if json.Unmarshal(in.Request.Object.Raw, &before) != nil || json.Unmarshal(patched, &after) != nil {
			t.Fatalf("patched %q into %q", in.Request.Object.Raw, patched)
		}
		bs, _ := before["spec"].(map[string]any)
		as, _ := after["spec"].(map[string]any)
		if had, _ := bs["virtualMachineClassName"].(string); had != "" {
			t.Fatalf("patched a VM that names class %q", had)
		}
		if as["virtualMachineClassName"] != "custom" {
			t.Fatalf("class after the patch %v, want custom", as["virtualMachineClassName"])
		}
		delete(bs, "virtualMachineClassName")
		delete(as, "virtualMachineClassName")
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("the patch changed more than the class: %q into %q", in.Request.Object.Raw, patched)
		}
	})
}
