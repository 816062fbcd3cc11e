package vm

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// FuzzWebhook posts arbitrary bodies to the VirtualMachine webhook as the apiserver would
// (whoever may create a VM writes the object in it). The answer must be an AdmissionReview
// that answers the request's uid, and a VM allowed with a new address must have one of
// the range that no other VM holds.
func FuzzWebhook(f *testing.F) {
	s := k8sruntime.NewScheme()
	if err := v1alpha2.AddToScheme(s); err != nil {
		f.Fatal(err)
	}
	r, err := ipam.ParseRanges(ipam.DefaultRanges)
	if err != nil {
		f.Fatal(err)
	}
	handler := &webhook.Admission{Handler: &Webhook{
		APIReader: fake.NewClientBuilder().WithScheme(s).WithObjects(addressWorld()...).Build(),
		Ranges:    r,
		Decoder:   admission.NewDecoder(s),
	}}

	vm := func(ns, name, addr, heldAddr string) []byte {
		v := &v1alpha2.VirtualMachine{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha2.GroupVersion.String(), Kind: "VirtualMachine"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		}
		v.Spec.VirtualMachineIPAddress = addr
		v.Status.IPAddress = heldAddr
		b, _ := json.Marshal(v)
		return b
	}
	review := func(op admissionv1.Operation, obj, old []byte) string {
		b, _ := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{UID: "7a4f", Operation: op, Namespace: "a", Name: "web",
				Object: k8sruntime.RawExtension{Raw: obj}, OldObject: k8sruntime.RawExtension{Raw: old}},
		})
		return string(b)
	}
	f.Add(review(admissionv1.Create, vm("a", "web", "10.66.10.8", ""), nil))
	f.Add(review(admissionv1.Create, vm("a", "web", "10.66.10.7", ""), nil))
	f.Add(review(admissionv1.Create, vm("prod", "db", "10.66.10.7", ""), nil))
	f.Add(review(admissionv1.Create, vm("a", "web", "10.66.10.255", ""), nil))
	f.Add(review(admissionv1.Create, vm("a", "web", "10.66.20.77", ""), nil))
	f.Add(review(admissionv1.Create, vm("a", "web", "::ffff:10.66.10.8", ""), nil))
	f.Add(review(admissionv1.Update, vm("a", "web", "10.66.10.9", "10.66.10.8"), vm("a", "web", "", "10.66.10.8")))
	f.Add(review(admissionv1.Create, vm("a", "web", "10.66.10.11", ""), nil))
	f.Add(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"2","operation":"UPDATE","object":{"metadata":{"namespace":"a","name":"web"},"spec":{"virtualMachineIPAddressName":"x"}},"oldObject":{"metadata":{"namespace":"a","name":"web"},"status":{"ipAddress":"10.66.10.8","virtualMachinePods":[{"name":"p","active":true}]}}}}`)
	f.Add(review(admissionv1.Update, vm("a", "web", "192.168.1.5", ""), vm("a", "web", "192.168.1.5", "")))
	f.Add(review(admissionv1.Update, vm("a", "web", "10.66.10.9", ""), []byte(`{"spec":`)))
	f.Add(review(admissionv1.Delete, nil, vm("a", "web", "", "")))
	f.Add(review(admissionv1.Create, []byte(`{"apiVersion":"v1","kind":"Pod"}`), nil))
	f.Add(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1","operation":"CREATE","object":{"spec":{"virtualMachineIPAddress":"x"}}}}`)
	f.Add(`{"kind":"AdmissionReview"}`)
	f.Add(`{"ApiVersion":"0","request":{}}`)
	f.Add(`[]`)
	f.Add(``)

	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, WebhookPath, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			handler.ServeHTTP(rec, req)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("no answer within 5 s to %q:\n%s", body, buf[:runtime.Stack(buf, true)])
		}

		var out admissionv1.AdmissionReview
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out.Response == nil {
			t.Fatalf("answer %d %q to %q is no AdmissionReview with a response", rec.Code, rec.Body.Bytes(), body)
		}
		var in admissionv1.AdmissionReview
		if utiljson.Unmarshal([]byte(body), &in) != nil || in.Request == nil {
			return // not JSON, or no request: nothing to compare the answer with
		}
		if in.APIVersion == "admission.k8s.io/v1" && in.Kind == "AdmissionReview" &&
			(out.APIVersion != in.APIVersion || out.Kind != in.Kind || out.Response.UID != in.Request.UID) {
			t.Fatalf("answer %s %s with uid %q to a v1 request with uid %q", out.APIVersion, out.Kind, out.Response.UID, in.Request.UID)
		}
		if !out.Response.Allowed {
			if out.Response.Result == nil || out.Response.Result.Message == "" {
				t.Fatalf("refused %q without saying why", body)
			}
			return
		}
		// Allowed: if the VM asks for a new address, it must be a free one of the range.
		op := in.Request.Operation
		if op != admissionv1.Create && op != admissionv1.Update {
			return
		}
		var obj, old v1alpha2.VirtualMachine
		if utiljson.Unmarshal(in.Request.Object.Raw, &obj) != nil {
			t.Fatalf("allowed an object that is no VirtualMachine: %q", in.Request.Object.Raw)
		}
		want, name := obj.Spec.VirtualMachineIPAddress, obj.Spec.VirtualMachineIPAddressName
		if op == admissionv1.Update {
			if utiljson.Unmarshal(in.Request.OldObject.Raw, &old) != nil {
				t.Fatalf("allowed an update whose old object is no VirtualMachine: %q", in.Request.OldObject.Raw)
			}
			if old.Spec.VirtualMachineIPAddress == want && old.Spec.VirtualMachineIPAddressName == name {
				return // unchanged: what was allowed stays allowed
			}
			// A running VM may change them too: the change awaits its restart.
		}
		if want != "" && name != "" {
			t.Fatalf("allowed VM %s/%s both address fields", obj.Namespace, obj.Name)
		}
		if want == "" {
			return
		}
		if err := r.Check(want); err != nil {
			t.Fatalf("allowed an address the range refuses: %v", err)
		}
		if want == "10.66.10.7" && (obj.Namespace != "prod" || obj.Name != "db") {
			t.Fatalf("allowed VM %s/%s the address held by prod/db", obj.Namespace, obj.Name)
		}
		if want == "10.66.10.11" || want == "10.66.10.9" && obj.Namespace != "b" {
			t.Fatalf("allowed VM %s/%s an address held or kept for another", obj.Namespace, obj.Name)
		}
	})
}
