package vmsnapshot

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	v1alpha2 "github.com/ferryvm/ferry/api/v1alpha2"
)

// TestContentRoundTrip: what a snapshot writes into its Secret reads back the same; a
// Secret a tenant broke is refused saying which key is wrong.
func TestContentRoundTrip(t *testing.T) {
	c := Content{VM: SavedVM{Name: "vm", UID: "u1", Spec: v1alpha2.VirtualMachineSpec{RunPolicy: v1alpha2.Manual}},
		Disks:   []SavedDisk{{Name: "root", VirtualDiskSnapshotName: "s-root"}},
		Address: &SavedAddress{Name: "vm-ip", Address: "10.66.10.2"}}
	data, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(&corev1.Secret{Data: data})
	if err != nil || got.VM.UID != "u1" || got.VM.Spec.RunPolicy != v1alpha2.Manual || len(got.Disks) != 1 || got.Address == nil || got.Address.Address != "10.66.10.2" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for key, bad := range map[string]string{
		v1alpha2.VMSnapshotSecretVM:        `{"name": ""}`,
		v1alpha2.VMSnapshotSecretDisks:     `[{"name": "root"}]`,
		v1alpha2.VMSnapshotSecretIPAddress: `"not an object"`,
	} {
		broken := map[string][]byte{}
		for k, v := range data {
			broken[k] = v
		}
		broken[key] = []byte(bad)
		if _, err := Decode(&corev1.Secret{Data: broken}); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("a Secret with %s = %s: %v", key, bad, err)
		}
	}
}
