package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestDefaultClassThroughDeployBaseWebhooks follows Deckhouse's admin guide on the default
// VirtualMachineClass through deploy/base's webhook configurations and a controller on its
// own token, on a real apiserver: a VM without a class gets generic while no class is the
// default, then the class annotated is-default-class=true (the apiserver applies the
// mutating webhook's patch; the CRD has no default that would hide the empty field), and
// is sized against it by the validating webhook; the class shows IsDefault true (the table
// kubectl get vmclass prints); a second default class is refused, naming
// the first.
func TestDefaultClassThroughDeployBaseWebhooks(t *testing.T) {
	install(t)
	bin := ferryBin(t)
	ctx := context.Background()
	proxy := startWebhookProxy(t, "127.0.0.1:0")
	for _, name := range []webhookConfigName{{kindValidating, "ferry-virtualmachine"}, {kindMutating, "ferry-virtualmachine"}} {
		cfg := name.object()
		fromManifest(t, manifest(t, name.kind, name.name), cfg)
		for _, cc := range clientConfigsOf(cfg) {
			url := fmt.Sprintf("https://127.0.0.1:%d%s", proxy.port(), *cc.Service.Path)
			cc.Service, cc.URL = nil, &url
		}
		if err := admin.Create(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		// They fail closed: left behind, they would refuse other tests' VMs and classes.
		t.Cleanup(func() { _ = admin.Delete(context.Background(), cfg) })
	}
	r := startCtrlReplica(t, bin, writeTokenKubeconfig(t, tokenFor(t, "ferry-controller", nil)), "a")
	proxy.add(r.webhookPort)
	r.waitReady(t)
	ns := newNamespace(t, "defaultclass-")

	// A VM as a manifest without spec.virtualMachineClassName, created in a dry run: the
	// answer is the object as it would be stored.
	create := func(cores int) (*v1alpha2.VirtualMachine, error) {
		vm := &v1alpha2.VirtualMachine{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vm"},
			Spec: v1alpha2.VirtualMachineSpec{
				CPU:             v1alpha2.CPUSpec{Cores: cores},
				Memory:          v1alpha2.MemorySpec{Size: resource.MustParse("128Mi")},
				BlockDeviceRefs: []v1alpha2.BlockDeviceRef{{Kind: v1alpha2.DiskDevice, Name: "root"}},
			},
		}
		err := admin.Create(ctx, vm, client.DryRunAll)
		return vm, err
	}
	classOf := func(want string, cores int) {
		t.Helper()
		eventually(t, 60*time.Second, fmt.Sprintf("a VM of %d cores without a class gets %s", cores, want), func() (bool, string) {
			vm, err := create(cores)
			return err == nil && vm.Spec.VirtualMachineClassName == want, fmt.Sprintf("class %q, %v", vm.Spec.VirtualMachineClassName, err)
		})
	}
	// The controller sets the configurations' caBundle: until then the calls fail.
	classOf(v1alpha2.GenericClassName, 4)

	class := func(name string) *v1alpha2.VirtualMachineClass {
		c := &v1alpha2.VirtualMachineClass{ObjectMeta: metav1.ObjectMeta{Name: name,
			Annotations: map[string]string{v1alpha2.AnnotationDefaultClass: "true"}}}
		c.Spec.CPU = v1alpha2.CPU{Type: v1alpha2.CPUTypeModel, Model: "Nehalem"}
		c.Spec.SizingPolicies = []v1alpha2.SizingPolicy{{Cores: &v1alpha2.SizingPolicyCores{Min: 1, Max: 2}}}
		return c
	}
	small := class("defaultclass-small")
	if err := admin.Create(ctx, small); err != nil {
		t.Fatal(err)
	}
	// Removed while the controller runs, which then takes its finalizer off.
	t.Cleanup(func() {
		_ = admin.Delete(context.Background(), small)
		eventually(t, 90*time.Second, "class defaultclass-small gone", func() (bool, string) {
			err := admin.Get(context.Background(), client.ObjectKeyFromObject(small), &v1alpha2.VirtualMachineClass{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	})
	classOf(small.Name, 2)
	// kubectl get vmclass shows it in column ISDEFAULT, as the guide's output does.
	raw, err := adminCS.Discovery().RESTClient().Get().AbsPath("/apis", v1alpha2.GroupVersion.String(), "virtualmachineclasses", small.Name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").Do(ctx).Raw()
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil || len(table.Rows) != 1 {
		t.Fatalf("the class as a table: %v, %s", err, raw)
	}
	shown := map[string]any{}
	for i, c := range table.ColumnDefinitions {
		shown[c.Name] = table.Rows[0].Cells[i]
	}
	if shown["IsDefault"] != "true" {
		t.Errorf("kubectl get vmclass shows %v; want IsDefault true", shown)
	}
	if _, err := create(4); !refusedWith(err, `spec.cpu.cores: 4 is not allowed by VirtualMachineClass "defaultclass-small"`) {
		t.Errorf("a VM of 4 cores without a class, the default allowing 1-2: %v; want the sizing refusal naming the default class", err)
	}
	err = admin.Create(ctx, class("defaultclass-second"), client.DryRunAll)
	if !refusedWith(err, "VirtualMachineClass defaultclass-small is already the default class") || !refusedWith(err, "remove the annotation from it first") {
		t.Errorf("a second default class: %v; want a refusal naming defaultclass-small and saying to remove its annotation first", err)
	}
}
