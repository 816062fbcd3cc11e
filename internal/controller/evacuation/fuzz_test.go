package evacuation

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/controller/power"
)

// FuzzWebhook posts arbitrary bodies to the eviction webhook, with one VM running in pod
// a/launcher-web on node n1. The answer must be an AdmissionReview within the webhook's
// time; an eviction of that pod must be refused with a 429 (the VM moves first), marking
// the VM only when it is no dry run; any other pod's eviction passes.
func FuzzWebhook(f *testing.F) {
	s := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		f.Fatal(err)
	}
	if err := v1alpha2.AddToScheme(s); err != nil {
		f.Fatal(err)
	}
	review := func(sub string, op admissionv1.Operation, ns, name string, dryRun bool) string {
		b, _ := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{UID: "e1", SubResource: sub, Operation: op, Namespace: ns, Name: name, DryRun: &dryRun,
				Object: k8sruntime.RawExtension{Raw: []byte(`{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"` + name + `"}}`)}},
		})
		return string(b)
	}
	f.Add(review("eviction", admissionv1.Create, "a", "launcher-web", false))
	f.Add(review("eviction", admissionv1.Create, "a", "launcher-web", true))
	f.Add(review("eviction", admissionv1.Create, "a", "other", false))
	f.Add(review("eviction", admissionv1.Create, "b", "launcher-web", false))
	f.Add(review("", admissionv1.Create, "a", "launcher-web", false))
	f.Add(review("eviction", admissionv1.Delete, "a", "launcher-web", false))
	f.Add(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"2","subResource":"eviction","operation":"CREATE","namespace":"a","name":"launcher-web","dryRun":null}}`)
	f.Add(`{"kind":"AdmissionReview","request":{"name":"launcher-web"}}`)
	f.Add(`{`)

	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body string) {
		vm := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web", UID: "u-web"}}
		vm.Status.NodeName = "n1"
		vm.Status.VirtualMachinePods = []v1alpha2.VirtualMachinePod{{Name: "launcher-web", Active: true}}
		controller := true
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "launcher-web",
				Labels:          map[string]string{v1alpha2.LabelVMName: "web", v1alpha2.LabelLauncher: ""},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha2.GroupVersion.String(), Kind: "VirtualMachine", Name: "web", UID: "u-web", Controller: &controller}}},
			Spec:   corev1.PodSpec{NodeName: "n1"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning},
		}
		c := fake.NewClientBuilder().WithScheme(s).
			WithObjects(vm, pod, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n2"}}).
			WithStatusSubresource(&v1alpha2.VirtualMachine{}).
			WithIndex(&v1alpha2.VirtualMachineOperation{}, power.IndexVMName, func(o client.Object) []string {
				return []string{o.(*v1alpha2.VirtualMachineOperation).Spec.VirtualMachineName}
			}).Build()
		handler := &webhook.Admission{Handler: &Webhook{Client: c, Backoff: DefaultBackoff, Now: func() time.Time { return now }}}

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
		case <-time.After(answerWithin + 5*time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("no answer within %s to %q:\n%s", answerWithin+5*time.Second, body, buf[:runtime.Stack(buf, true)])
		}

		var out admissionv1.AdmissionReview
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out.Response == nil {
			t.Fatalf("answer %d %q to %q is no AdmissionReview with a response", rec.Code, rec.Body.Bytes(), body)
		}
		code := int32(0)
		if r := out.Response.Result; r != nil {
			code = r.Code
		}
		if !out.Response.Allowed && code != http.StatusBadRequest && code != http.StatusTooManyRequests {
			t.Fatalf("refused %q with code %d: %+v", body, code, out.Response.Result)
		}
		var in admissionv1.AdmissionReview
		if utiljson.Unmarshal([]byte(body), &in) != nil || in.Request == nil || code == http.StatusBadRequest {
			return // a request that was not read: nothing to compare the answer with
		}
		r := in.Request
		ours := r.SubResource == "eviction" && r.Operation == admissionv1.Create && r.Namespace == "a" && r.Name == "launcher-web"
		if ours != (code == http.StatusTooManyRequests) || ours == out.Response.Allowed {
			t.Fatalf("eviction of %s/%s (subresource %q, %s): allowed %v, code %d", r.Namespace, r.Name, r.SubResource, r.Operation, out.Response.Allowed, code)
		}
		var after v1alpha2.VirtualMachine
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(vm), &after); err != nil {
			t.Fatal(err)
		}
		marked := after.Annotations[v1alpha2.AnnotationEvacuateFrom] == "n1"
		if want := ours && (r.DryRun == nil || !*r.DryRun); marked != want {
			t.Fatalf("eviction of %s/%s (dry run %v): VM marked %v, want %v", r.Namespace, r.Name, r.DryRun, marked, want)
		}
	})
}
