package vm

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

// addressWorld is what the webhook tests read: 10.66.10.7 held by prod/db's own vmip,
// 10.66.10.9 released by namespace b lately, 10.66.10.11 held by a vmip of prod that no
// VM uses.
func addressWorld() []client.Object {
	lease := func(addr, ns, name string) *v1alpha2.VirtualMachineIPAddressLease {
		return &v1alpha2.VirtualMachineIPAddressLease{
			ObjectMeta: metav1.ObjectMeta{Name: ipam.LeaseName(addr)},
			Spec: v1alpha2.VirtualMachineIPAddressLeaseSpec{VirtualMachineIPAddressRef: &v1alpha2.VirtualMachineIPAddressLeaseIPAddressRef{
				Namespace: ns, Name: name,
			}},
		}
	}
	dbIP := &v1alpha2.VirtualMachineIPAddress{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "db-x7k2p",
		Labels: map[string]string{v1alpha2.LabelVirtualMachineUID: "u-db"}}}
	dbIP.Spec.Type = v1alpha2.VirtualMachineIPAddressTypeAuto
	dbIP.Status.Address, dbIP.Status.VirtualMachine = "10.66.10.7", "db"
	spare := &v1alpha2.VirtualMachineIPAddress{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "spare"}}
	spare.Spec = v1alpha2.VirtualMachineIPAddressSpec{Type: v1alpha2.VirtualMachineIPAddressTypeStatic, StaticIP: "10.66.10.11"}
	spare.Status.Address = "10.66.10.11"
	return []client.Object{lease("10.66.10.7", "prod", "db-x7k2p"), dbIP, lease("10.66.10.9", "b", ""), lease("10.66.10.11", "prod", "spare"), spare}
}

func TestWebhookRefusesAddressesThatCannotBeTheVMs(t *testing.T) {
	s := runtime.NewScheme()
	_ = v1alpha2.AddToScheme(s)
	r, err := ipam.ParseRanges(ipam.DefaultRanges)
	if err != nil {
		t.Fatal(err)
	}
	w := &Webhook{APIReader: fake.NewClientBuilder().WithScheme(s).WithObjects(addressWorld()...).Build(), Ranges: r, Decoder: admission.NewDecoder(s)}

	vm := func(ns, name, addr, held string, set ...func(*v1alpha2.VirtualMachine)) *v1alpha2.VirtualMachine {
		v := &v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		v.Spec.VirtualMachineIPAddress = addr
		v.Status.IPAddress = held
		for _, f := range set {
			f(v)
		}
		return v
	}
	named := func(n string) func(*v1alpha2.VirtualMachine) {
		return func(v *v1alpha2.VirtualMachine) { v.Spec.VirtualMachineIPAddressName = n }
	}
	runs := func(v *v1alpha2.VirtualMachine) {
		v.Status.VirtualMachinePods = []v1alpha2.VirtualMachinePod{{Name: "virt-launcher-x", Active: true}}
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
		{"outside the range", admissionv1.Create, vm("a", "web", "192.168.1.5", ""), nil, "outside the VM address ranges 10.66.10.0/24, 10.66.20.0/24 and 10.66.30.0/24"},
		{"an address of the second range", admissionv1.Create, vm("a", "web", "10.66.20.77", ""), nil, ""},
		{"the gateway", admissionv1.Create, vm("a", "web", "10.66.10.1", ""), nil, "gateway"},
		{"held by another VM", admissionv1.Create, vm("a", "web", "10.66.10.7", ""), nil, "already held by VM prod/db"},
		{"held by a vmip no VM uses", admissionv1.Create, vm("prod", "web", "10.66.10.11", ""), nil, "VirtualMachineIPAddress prod/spare, which no VM uses"},
		{"released by another namespace", admissionv1.Create, vm("a", "web", "10.66.10.9", ""), nil, "released lately by namespace b"},
		{"released by its own namespace", admissionv1.Create, vm("b", "web", "10.66.10.9", ""), nil, ""},
		{"held by this VM", admissionv1.Update, vm("prod", "db", "10.66.10.7", "10.66.10.7"), vm("prod", "db", "", "10.66.10.7"), ""},
		{"changed while it runs (awaits a restart)", admissionv1.Update, vm("a", "web", "10.66.10.12", "10.66.10.8", runs), vm("a", "web", "", "10.66.10.8", runs), ""},
		{"vmip changed while it runs (awaits a restart)", admissionv1.Update, vm("a", "web", "", "10.66.10.8", runs, named("other")), vm("a", "web", "", "10.66.10.8", runs), ""},
		{"changed while stopped", admissionv1.Update, vm("b", "web", "10.66.10.9", "10.66.10.8"), vm("b", "web", "", "10.66.10.8"), ""},
		{"unchanged bad address", admissionv1.Update, vm("a", "web", "192.168.1.5", ""), vm("a", "web", "192.168.1.5", ""), ""},
		{"both fields", admissionv1.Create, vm("a", "web", "10.66.10.8", "", named("ip")), nil, "set one, not both"},
		{"a vmip name", admissionv1.Create, vm("a", "web", "", "", named("web-ip")), nil, ""},
		{"a vmip held by another VM", admissionv1.Create, vm("prod", "web", "", "", named("db-x7k2p")), nil, ""}, // the VM waits and says why
		{"a bad vmip name", admissionv1.Create, vm("a", "web", "", "", named("Web_IP")), nil, "not a valid VirtualMachineIPAddress name"},
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
