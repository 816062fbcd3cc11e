package vm

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

func TestWebhookRefusesAddressesThatCannotBeTheVMs(t *testing.T) {
	s := runtime.NewScheme()
	_ = v1alpha2.AddToScheme(s)
	lease := &v1alpha2.VirtualMachineIPAddressLease{
		ObjectMeta: metav1.ObjectMeta{Name: ipam.LeaseName("10.66.10.7")},
		Spec: v1alpha2.VirtualMachineIPAddressLeaseSpec{VirtualMachineRef: v1alpha2.VirtualMachineRef{
			Namespace: "prod", Name: "db", UID: "u-db",
		}},
	}
	r, err := ipam.ParseRange("10.66.10.0/24")
	if err != nil {
		t.Fatal(err)
	}
	w := &Webhook{APIReader: fake.NewClientBuilder().WithScheme(s).WithObjects(lease).Build(), Range: r, Decoder: admission.NewDecoder(s)}

	vm := func(ns, name, addr, held string) *v1alpha2.VirtualMachine {
		v := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		v.Spec.VirtualMachineIPAddress = addr
		v.Status.IPAddress = held
		return v
	}
	raw := func(v *v1alpha2.VirtualMachine) runtime.RawExtension {
		if v == nil {
			return runtime.RawExtension{}
		}
		b, _ := json.Marshal(v)
		return runtime.RawExtension{Raw: b}
	}
	for _, c := range []struct {
		name     string
		op       admissionv1.Operation
		obj, old *v1alpha2.VirtualMachine
		want     string // "" allowed, else a part of the refusal
	}{
		{"no address asked", admissionv1.Create, vm("a", "web", "", ""), nil, ""},
		{"free address", admissionv1.Create, vm("a", "web", "10.66.10.8", ""), nil, ""},
		{"outside the range", admissionv1.Create, vm("a", "web", "192.168.1.5", ""), nil, "outside the VM address range 10.66.10.0/24"},
		{"the gateway", admissionv1.Create, vm("a", "web", "10.66.10.1", ""), nil, "gateway"},
		{"held by another VM", admissionv1.Create, vm("a", "web", "10.66.10.7", ""), nil, "already held by VM prod/db"},
		{"held by this VM", admissionv1.Update, vm("prod", "db", "10.66.10.7", "10.66.10.7"), vm("prod", "db", "", "10.66.10.7"), ""},
		{"changed while held", admissionv1.Update, vm("a", "web", "10.66.10.9", "10.66.10.8"), vm("a", "web", "", "10.66.10.8"), "cannot change while it holds one"},
		{"unchanged bad address", admissionv1.Update, vm("a", "web", "192.168.1.5", ""), vm("a", "web", "192.168.1.5", ""), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Operation: c.op, Object: raw(c.obj), OldObject: raw(c.old)}}
			resp := w.Handle(context.Background(), req)
			msg := ""
			if resp.Result != nil {
				msg = resp.Result.Message
			}
			switch {
			case c.want == "" && !resp.Allowed:
				t.Errorf("refused: %s", msg)
			case c.want != "" && (resp.Allowed || !strings.Contains(msg, c.want)):
				t.Errorf("allowed %v, message %q; want a refusal with %q", resp.Allowed, msg, c.want)
			}
		})
	}
}
