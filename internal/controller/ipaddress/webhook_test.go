package ipaddress

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
	"github.com/ferryvm/ferry/internal/ipam"
)

func lease(addr, ns, name string, labels map[string]string) *v1alpha2.VirtualMachineIPAddressLease {
	l := &v1alpha2.VirtualMachineIPAddressLease{ObjectMeta: metav1.ObjectMeta{Name: ipam.LeaseName(addr), Labels: labels}}
	if ns != "" || name != "" {
		l.Spec.VirtualMachineIPAddressRef = &v1alpha2.VirtualMachineIPAddressLeaseIPAddressRef{Namespace: ns, Name: name}
	}
	return l
}

func vmip(ns, name string, typ v1alpha2.VirtualMachineIPAddressType, static string) *v1alpha2.VirtualMachineIPAddress {
	return &v1alpha2.VirtualMachineIPAddress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha2.VirtualMachineIPAddressSpec{Type: typ, StaticIP: static}}
}

func bound(ip *v1alpha2.VirtualMachineIPAddress, addr, vm string) *v1alpha2.VirtualMachineIPAddress {
	ip.Status.Address, ip.Status.VirtualMachine = addr, vm
	ip.Status.Conditions = []metav1.Condition{{Type: v1alpha2.IPAddressConditionBound, Status: metav1.ConditionTrue, Reason: v1alpha2.ReasonIPAddressBound}}
	return ip
}

// world: 10.66.10.7 held by prod/db-ip, used by VM db; 10.66.10.9 released by namespace b;
// 10.66.10.12 a lease of an earlier release of the VM with UID u-old.
func world() []client.Object {
	return []client.Object{
		lease("10.66.10.7", "prod", "db-ip", nil), bound(vmip("prod", "db-ip", v1alpha2.VirtualMachineIPAddressTypeAuto, ""), "10.66.10.7", "db"),
		lease("10.66.10.9", "b", "", nil),
		lease("10.66.10.12", "", "", map[string]string{v1alpha2.LabelLegacyLeaseHolder: "u-old"}),
		&v1alpha2.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "old", UID: "u-old"}},
	}
}

// madeBy marks ip as made by the VM name of UID uid.
func madeBy(ip *v1alpha2.VirtualMachineIPAddress, name, uid string) *v1alpha2.VirtualMachineIPAddress {
	ip.Labels = map[string]string{v1alpha2.LabelVirtualMachineUID: uid}
	ip.OwnerReferences = []metav1.OwnerReference{{APIVersion: "virtualization.deckhouse.io/v1alpha2", Kind: "VirtualMachine", Name: name, UID: types.UID(uid), Controller: ptrTrue()}}
	return ip
}

func newWebhook(t testing.TB) *Webhook {
	s := runtime.NewScheme()
	if err := v1alpha2.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	r, err := ipam.ParseRanges(ipam.DefaultRanges)
	if err != nil {
		t.Fatal(err)
	}
	return &Webhook{APIReader: fake.NewClientBuilder().WithScheme(s).WithObjects(world()...).Build(), Ranges: r, Decoder: admission.NewDecoder(s)}
}

func TestWebhookRefusesStaticAddressesThatCannotBeTheirs(t *testing.T) {
	w := newWebhook(t)
	raw := func(ip *v1alpha2.VirtualMachineIPAddress) runtime.RawExtension {
		if ip == nil {
			return runtime.RawExtension{}
		}
		b, _ := json.Marshal(ip)
		return runtime.RawExtension{Raw: b}
	}
	const auto, static = v1alpha2.VirtualMachineIPAddressTypeAuto, v1alpha2.VirtualMachineIPAddressTypeStatic
	for _, c := range []struct {
		name     string
		op       admissionv1.Operation
		obj, old *v1alpha2.VirtualMachineIPAddress
		want     string // "" allowed, else a part of the refusal
	}{
		{"auto", admissionv1.Create, vmip("a", "x", auto, ""), nil, ""},
		{"free static", admissionv1.Create, vmip("a", "x", static, "10.66.10.8"), nil, ""},
		{"outside the range", admissionv1.Create, vmip("a", "x", static, "192.168.1.5"), nil, "spec.staticIP: 192.168.1.5 is outside the VM address ranges 10.66.10.0/24, 10.66.20.0/24 and 10.66.30.0/24"},
		{"static in the third range", admissionv1.Create, vmip("a", "x", static, "10.66.30.40"), nil, ""},
		{"the gateway of the second range", admissionv1.Create, vmip("a", "x", static, "10.66.20.1"), nil, "spec.staticIP: 10.66.20.1 is the gateway address of the VM address range 10.66.20.0/24"},
		{"the broadcast", admissionv1.Create, vmip("a", "x", static, "10.66.10.255"), nil, "broadcast"},
		{"held by a VM", admissionv1.Create, vmip("a", "x", static, "10.66.10.7"), nil, "already held by VM prod/db (VirtualMachineIPAddress db-ip)"},
		{"released by another namespace", admissionv1.Create, vmip("a", "x", static, "10.66.10.9"), nil, "released lately by namespace b"},
		{"released by its namespace", admissionv1.Create, vmip("b", "x", static, "10.66.10.9"), nil, ""},
		{"a lease of an earlier release", admissionv1.Create, vmip("a", "x", static, "10.66.10.12"), nil, "an earlier Ferry release"},
		{"its VM's lease of an earlier release", admissionv1.Create, madeBy(vmip("a", "old-x", static, "10.66.10.12"), "old", "u-old"), nil, ""},
		{"a forged claim on a lease of an earlier release", admissionv1.Create, madeBy(vmip("b", "x", static, "10.66.10.12"), "old", "u-old"), nil, "an earlier Ferry release"},
		{"its own lease", admissionv1.Update, vmip("prod", "db-ip", static, "10.66.10.7"), bound(vmip("prod", "db-ip", auto, ""), "10.66.10.7", "db"), ""},
		{"auto to static elsewhere", admissionv1.Update, vmip("prod", "db-ip", static, "10.66.10.8"), bound(vmip("prod", "db-ip", auto, ""), "10.66.10.7", "db"), "type Auto may become Static only with staticIP 10.66.10.7"},
		{"bound static moved", admissionv1.Update, vmip("a", "s", static, "10.66.10.30"), bound(vmip("a", "s", static, "10.66.10.20"), "10.66.10.20", ""), "its address cannot change"},
		{"bound static to auto", admissionv1.Update, vmip("a", "s", auto, ""), bound(vmip("a", "s", static, "10.66.10.20"), "10.66.10.20", ""), "its type cannot change from Static to Auto"},
		{"pending static moved", admissionv1.Update, vmip("a", "s", static, "10.66.10.30"), vmip("a", "s", static, "192.168.1.5"), ""},
		{"unchanged", admissionv1.Update, vmip("a", "s", static, "192.168.1.5"), vmip("a", "s", static, "192.168.1.5"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := w.Handle(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{Operation: c.op, Object: raw(c.obj), OldObject: raw(c.old)}})
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

// FuzzWebhook posts arbitrary bodies to the VirtualMachineIPAddress webhook (whoever may
// create a vmip writes the object in it, staticIP included). The answer must be an
// AdmissionReview; a new Static address it allows is one of the range, spelled one way,
// that no one else holds.
func FuzzWebhook(f *testing.F) {
	handler := &webhook.Admission{Handler: newWebhook(f)}
	review := func(op admissionv1.Operation, obj, old *v1alpha2.VirtualMachineIPAddress) string {
		enc := func(ip *v1alpha2.VirtualMachineIPAddress) runtime.RawExtension {
			if ip == nil {
				return runtime.RawExtension{}
			}
			b, _ := json.Marshal(ip)
			return runtime.RawExtension{Raw: b}
		}
		b, _ := json.Marshal(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request:  &admissionv1.AdmissionRequest{UID: "1", Operation: op, Object: enc(obj), OldObject: enc(old)},
		})
		return string(b)
	}
	const static = v1alpha2.VirtualMachineIPAddressTypeStatic
	for _, a := range []string{"10.66.10.8", "10.66.10.7", "10.66.10.9", "10.66.10.12", "10.66.10.07", "::ffff:10.66.10.8", "10.66.10.8/24", "10.66.20.77", "10.66.30.255", " 10.66.10.8", "1e1.0.0.1", ""} {
		f.Add(review(admissionv1.Create, vmip("a", "x", static, a), nil))
	}
	f.Add(review(admissionv1.Update, vmip("a", "s", static, "10.66.10.30"), bound(vmip("a", "s", static, "10.66.10.20"), "10.66.10.20", "")))
	f.Add(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"2","operation":"CREATE","object":{"spec":{"type":"Static","staticIP":"10.66.10.7"}}}}`)
	f.Add(`{"kind":"AdmissionReview"}`)
	f.Add(``)
	r := newWebhook(f).Ranges
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, WebhookPath, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		var out admissionv1.AdmissionReview
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil || out.Response == nil {
			t.Fatalf("answer %d %q to %q is no AdmissionReview with a response", rec.Code, rec.Body.Bytes(), body)
		}
		var in admissionv1.AdmissionReview
		if utiljson.Unmarshal([]byte(body), &in) != nil || in.Request == nil || !out.Response.Allowed {
			if !out.Response.Allowed && (out.Response.Result == nil || out.Response.Result.Message == "") {
				t.Fatalf("refused %q without saying why", body)
			}
			return
		}
		if in.Request.Operation != admissionv1.Create {
			return
		}
		var ip v1alpha2.VirtualMachineIPAddress
		if utiljson.Unmarshal(in.Request.Object.Raw, &ip) != nil {
			t.Fatalf("allowed an object that is no VirtualMachineIPAddress: %q", in.Request.Object.Raw)
		}
		if ip.Spec.Type != static || ip.Spec.StaticIP == "" {
			return
		}
		a := ip.Spec.StaticIP
		if err := r.Check(a); err != nil {
			t.Fatalf("allowed a static address the range refuses: %v", err)
		}
		if back, ok := ipam.AddressOf(ipam.LeaseName(a)); !ok || back != a {
			t.Fatalf("allowed %q, whose lease %s reads back as %q", a, ipam.LeaseName(a), back)
		}
		legacyOwn := ip.Namespace == "a" && OwnerVM(&ip) == "old" && ip.Labels[v1alpha2.LabelVirtualMachineUID] == "u-old"
		if a == "10.66.10.7" || a == "10.66.10.12" && !legacyOwn || a == "10.66.10.9" && ip.Namespace != "b" {
			t.Fatalf("allowed %s/%s the address %s, held or kept for another", ip.Namespace, ip.Name, a)
		}
	})
}
