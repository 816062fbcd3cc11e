package vmclass

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// FuzzWebhook posts arbitrary bodies to the VirtualMachineClass webhook (whoever may
// annotate a class writes the object in it), with class custom the default. The answer
// must be an AdmissionReview, and no other class may become a second default.
func FuzzWebhook(f *testing.F) {
	s := testScheme(f)
	handler := &webhook.Admission{Handler: &Webhook{
		APIReader: fake.NewClientBuilder().WithScheme(s).WithObjects(class("custom", "true")).Build(),
		Decoder:   admission.NewDecoder(s),
	}}
	review := func(op admissionv1.Operation, obj, old string) string {
		return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"7a4f","operation":"` + string(op) + `","object":` + obj + `,"oldObject":` + old + `}}`
	}
	marked := `{"metadata":{"name":"other","annotations":{"` + v1alpha2.AnnotationDefaultClass + `":"true"}}}`
	f.Add(review(admissionv1.Create, marked, `null`))
	f.Add(review(admissionv1.Update, marked, `{"metadata":{"name":"other"}}`))
	f.Add(review(admissionv1.Update, marked, marked))
	f.Add(review(admissionv1.Update, marked, `{"metadata":`))
	f.Add(review(admissionv1.Create, `{"metadata":{"name":"custom","annotations":{"`+v1alpha2.AnnotationDefaultClass+`":"true"}}}`, `null`))
	f.Add(review(admissionv1.Create, `{"metadata":{"name":"x","annotations":{"`+v1alpha2.AnnotationDefaultClass+`":"TRUE"}}}`, `null`))
	f.Add(review(admissionv1.Delete, `null`, marked))
	f.Add(`{"kind":"AdmissionReview"}`)
	f.Add(``)

	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, WebhookPath, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		var out admissionv1.AdmissionReview
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out.Response == nil {
			t.Fatalf("answer %d %q to %q is no AdmissionReview with a response", rec.Code, rec.Body.Bytes(), body)
		}
		if !out.Response.Allowed {
			if out.Response.Result == nil || out.Response.Result.Message == "" {
				t.Fatalf("refused %q without saying why", body)
			}
			return
		}
		var in admissionv1.AdmissionReview
		if json.Unmarshal([]byte(body), &in) != nil || in.Request == nil {
			return
		}
		if in.Request.Operation != admissionv1.Create && in.Request.Operation != admissionv1.Update {
			return
		}
		var obj, old v1alpha2.VirtualMachineClass
		if json.Unmarshal(in.Request.Object.Raw, &obj) != nil {
			t.Fatalf("allowed an object that is no VirtualMachineClass: %q", in.Request.Object.Raw)
		}
		if !IsDefault(&obj) || obj.Name == "custom" {
			return
		}
		if in.Request.Operation == admissionv1.Update && json.Unmarshal(in.Request.OldObject.Raw, &old) == nil && IsDefault(&old) {
			return // already the default before: not checked again
		}
		t.Fatalf("allowed class %q to become a second default beside custom: %q", obj.Name, body)
	})
}
